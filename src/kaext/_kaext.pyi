"""Type stub for the compiled module ``kaext._kaext`` (built from ``ext/_kaext.pyx``).

Same interface as the pure-Python implementation ``kaext._pure``; the
signatures here match it name for name (``tests/test_packaging.py`` checks).
"""

from typing import Any

#: ``"c"`` for this module (``"python"`` for ``kaext._pure``).
IMPLEMENTATION: str
#: The C shim's numbers (``kaext._platform`` states the same for Python).
NKNOBS: int
STEP_KEEPALIVE: int
STEP_PROBE: int
ROLLBACK_SHIFT: int
MECH_NONE: int
MECH_SETSOCKOPT: int
MECH_SIO: int
#: Every name the platform headers define, with its value.
CONSTANTS: dict[str, int]
#: The header each constant came from.
CONSTANT_SOURCES: dict[str, str]
#: Per knob: (header name, level, optname), or None where this OS has no such knob.
KNOB_OPTIONS: tuple[tuple[str, int, int] | None, ...]
#: The largest socket handle accepted (INT_MAX on POSIX, INVALID_SOCKET - 1 on Windows).
FD_MAX: int

class Plan:
    """What to write, in each knob's OS unit: the C shim's ``kaext_plan``."""

    _fields: tuple[str, ...]
    @property
    def set_mask(self) -> int: ...
    @property
    def idle(self) -> int: ...
    @property
    def interval(self) -> int: ...
    @property
    def count(self) -> int: ...
    @property
    def user_timeout(self) -> int: ...
    @property
    def keepalive(self) -> int: ...
    def __init__(
        self, set_mask: int, idle: int, interval: int, count: int, user_timeout: int, keepalive: int
    ) -> None: ...

def knob_supported(k: int) -> bool: ...
def mechanism(k: int) -> int: ...
def knob_unit(k: int) -> str: ...
def apply(sock: Any, plan: Plan) -> None: ...
def apply_policy(self: Any, sock: Any) -> None: ...
def read(sock: Any, want: int = 0x1F) -> tuple[int, int | None, int | None, int | None, int | None]: ...

# Running processes (kaext.connections): Linux only, ENOSYS elsewhere.
def pidfd_open(pid: int) -> int: ...
def pidfd_getfd(pidfd: int, fd: int) -> int: ...
def proc_read(pidfd: int, fds: Any) -> list[tuple[int, int, int, int, int, int, int | None]]: ...
def diag_parse(
    buf: bytearray, n: int, wanted: set[int], table: dict[int, Any], states: tuple[str, ...],
    timers: tuple[str, ...], keepalive_timer: int,
) -> bool: ...
