"""Sphinx directives that build the per-OS tables from the package's own data.

``kaext-platform-table`` renders ``kaext._platform`` (the knob specs of every OS family, the
alternatives the running system may use instead, and the reasons for the knobs an OS lacks);
``kaext-middlebox-table`` renders ``kaext.presets.MIDDLEBOXES``.  The numbers on the site are
therefore the numbers the code uses: they cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

from kaext import _platform, presets

#: How the site names each OS family of ``_platform.FAMILY_SPECS``.
FAMILY_TITLES = {
    "linux": "Linux",
    "darwin": "macOS / iOS",
    "windows": "Windows 10 1709+",
    "freebsd": "FreeBSD",
    "netbsd": "NetBSD",
    "dragonfly": "DragonFly ≥ 5.8",
    "openbsd": "OpenBSD",
    "sunos": "illumos / Solaris 11.4",
}
#: How the site names the platforms with a table of their own within a family
#: (``_platform.PLATFORM_SPECS``).
PLATFORM_TITLES = {"cygwin": "Cygwin (Windows underneath)"}
#: The alternatives (older releases, other mechanisms) by family.
ALTERNATIVE_TITLES = {
    "windows": "Windows before 10 1709 (and wine)",
    "sunos": "Solaris before 11.4",
}
UNIT_NAMES = {
    "s": "s",
    "ms": "ms",
    "ticks": "slow ticks (0.5 s)",
    "probes": "probes",
    "syns": "SYN retransmissions",
}


def _number(value: int) -> str:
    """Digits grouped by a narrow no-break space, so that a number never wraps in its cell."""
    if value == _platform.INT_MAX:
        return "2³¹−1"
    return f"{value:,}".replace(",", "\u202f") if value >= 100_000 else str(value)


def _table(
    header: list[str], rows: list[list[str]], widths: list[int], note_below: bool = False, name: str = ""
) -> nodes.table:
    """A table of ``rows``; with ``note_below`` each row's last cell is not a column but, when
    it is not empty, a line of its own under the row, across the whole table (so that the
    table fits the page's width at 1280 px)."""
    table = nodes.table(classes=["kaext-generated", *([f"kaext-{name}"] if name else [])])
    group = nodes.tgroup(cols=len(header))
    table += group
    for width in widths:
        group += nodes.colspec(colwidth=width)
    head = nodes.thead()
    group += head
    body = nodes.tbody()
    group += body
    for target, cells in ((head, [header]), (body, rows)):
        for cells_of_row in cells:
            note = ""
            if note_below and target is body:
                note, cells_of_row = cells_of_row[-1], cells_of_row[:-1]
            row = nodes.row()
            for text in cells_of_row:
                entry = nodes.entry()
                entry += nodes.paragraph(text=text)
                row += entry
            target += row
            if note:
                line = nodes.row(classes=["kaext-note"])
                entry = nodes.entry(morecols=len(cells_of_row) - 1)
                entry += nodes.paragraph(text=note)
                line += entry
                target += line
    return table


def platform_rows() -> list[list[str]]:
    """One row per OS family and knob: what the table shows (also used by the docs test)."""
    rows: list[list[str]] = []

    def add(title: str, knob: str, spec: _platform.KnobSpec) -> None:
        rows.append(
            [
                title,
                knob,
                str(spec.describe()),
                UNIT_NAMES.get(spec.unit, spec.unit),
                f"{_number(spec.min)} .. {_number(spec.max)}",
                "yes" if spec.readable else "no (None)",
                spec.note,
            ]
        )

    for family, specs in _platform.FAMILY_SPECS.items():
        title = FAMILY_TITLES.get(family, family)
        for knob in _platform.KNOBS:
            spec = specs.get(knob)
            if spec is not None:
                add(title, knob, spec)
            else:
                reason = _platform.UNSUPPORTED.get(family, {}).get(knob, "not available")
                rows.append([title, knob, "—", "", "", "", reason])
        for knob, alternatives in _platform.ALTERNATIVES.get(family, {}).items():
            for spec in alternatives:
                add(ALTERNATIVE_TITLES.get(family, family + " (alternative)"), knob, spec)
    old = _platform.specs("dragonfly", "5.6")
    for knob in _platform.KNOBS:
        if knob in old and old[knob] is not _platform.DRAGONFLY.get(knob):
            add("DragonFly before 5.8", knob, old[knob])
    for platform in _platform.PLATFORM_SPECS:
        table = _platform.specs(_platform._family(platform), platform=platform)
        for knob in _platform.KNOBS:
            if knob in table:
                add(PLATFORM_TITLES.get(platform, platform), knob, table[knob])
    return rows


class PlatformTable(SphinxDirective):
    """The per-OS knob table, from ``kaext._platform``."""

    def run(self) -> list[nodes.Node]:
        header = ["OS", "knob", "how kaext sets it", "unit", "range (in the unit)", "read back"]
        rows = platform_rows()  # each row's last cell, its note, goes on a line of its own below it
        return [_table(header, rows, [16, 12, 34, 10, 18, 10], note_below=True, name="platforms")]


class MiddleboxTable(SphinxDirective):
    """The middleboxes ``Policy.for_middlebox`` knows, from ``kaext.presets.MIDDLEBOXES``."""

    def run(self) -> list[nodes.Node]:
        rows = []
        for name, box in presets.MIDDLEBOXES.items():
            policy = presets.for_middlebox(name)
            rows.append([name, f"{box.idle_timeout} s", str(policy), box.description, box.source])
        header = ["name", "idle timeout", "for_middlebox(name)", "what", "source"]
        return [_table(header, rows, [12, 8, 14, 30, 36], name="middleboxes")]


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("kaext-platform-table", PlatformTable)
    app.add_directive("kaext-middlebox-table", MiddleboxTable)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
