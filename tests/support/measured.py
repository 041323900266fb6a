"""What a proof measured, printed in pytest's terminal summary under a title of its own.

A test module keeps a list of lines, hands it to :func:`report` from a module-scoped autouse
fixture, and appends to it; the lines are printed after the run (also when a test failed), so a
CI log shows the real figures next to the verdict.
"""

from __future__ import annotations

import pytest


class _Section:
    def __init__(self, title: str, lines: list[str]) -> None:
        self.title, self.lines = title, lines

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.lines:
            terminalreporter.write_sep("-", self.title)
            for line in self.lines:
                terminalreporter.write_line(line)


def report(config: pytest.Config, title: str, lines: list[str]) -> None:
    """Print ``lines`` (filled in by the tests) under ``title`` at the end of the run; once per title."""
    name = f"kaext-measured-{title}"
    if not config.pluginmanager.has_plugin(name):
        config.pluginmanager.register(_Section(title, lines), name)
