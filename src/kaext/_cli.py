"""What the command-line tools (``kaext.verify``, ``kaext.inspect``, ``kaext.run``) share."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def one_line_warnings(prog: Callable[[], str]) -> Iterator[None]:
    """Within: each distinct warning is printed once, as ``PROG: warning: MESSAGE`` on stderr.

    A policy whose user timeout cuts probing short warns; a command-line tool says so in
    one line, not with Python's two-line warning format.  ``-W`` options still rule
    (``-W error`` makes the warning an exception, which the tool reports as a usage error).
    """
    with warnings.catch_warnings():
        if not sys.warnoptions:
            warnings.simplefilter("always")  # counted here: a "once" filter's memory is reset by nested catch_warnings
        shown: set[str] = set()

        def one_line(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
            line = f"{prog()}: warning: {message}"
            if line not in shown:
                shown.add(line)
                print(line, file=sys.stderr)

        warnings.showwarning = one_line
        yield
