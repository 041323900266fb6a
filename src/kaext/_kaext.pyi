"""Type stub for the compiled module ``kaext._kaext`` (built from ``ext/_kaext.pyx``).

Same interface as the pure-Python implementation ``kaext._pure``; the
signatures here match it name for name (``tests/test_packaging.py`` checks).
"""

from typing import Any

#: ``"c"`` for this module (``"python"`` for ``kaext._pure``).
IMPLEMENTATION: str
#: Every name the platform headers define, with its value.
CONSTANTS: dict[str, int]
#: The header each constant came from.
CONSTANT_SOURCES: dict[str, str]
#: Per knob: (header name, level, optname), or None where this OS has no such knob.
KNOB_OPTIONS: tuple[tuple[str, int, int] | None, ...]
#: The largest socket handle accepted (INT_MAX on POSIX, 2**63 - 1 on Windows).
FD_MAX: int

def knob_supported(k: int) -> bool: ...
def mechanism(k: int) -> int: ...
def knob_unit(k: int) -> str: ...
def apply(sock: Any, plan: tuple[int, int, int, int, int, int]) -> None: ...
def apply_policy(self: Any, sock: Any) -> None: ...
def read(sock: Any, want: int = 0x1F) -> tuple[int, int | None, int | None, int | None, int | None]: ...
