"""Chooses the backend: the C extension ``kaext._kaext``, or the pure-Python ``kaext._pure``.

``KAEXT_NO_EXTENSIONS=1`` forces the pure-Python backend; so does a Python on which
the extension was not built (PyPy, no compiler).  Both have the same interface
(``src/kaext/_kaext.pyi``); the choice is made once, at import.
"""

from __future__ import annotations

import os
import sys

# The backend interface (``_kaext.pyi``): both modules define exactly these names.
__all__ = [
    "BPF_FACTS",
    "BPF_SETSOCKOPT",
    "BPF_SOCK_OPS",
    "bpf_attach",
    "bpf_config_read",
    "bpf_config_write",
    "bpf_counters_read",
    "bpf_detach",
    "bpf_fd_by_id",
    "bpf_load",
    "bpf_map_create",
    "bpf_map_id",
    "bpf_mount",
    "bpf_obj_get",
    "bpf_pin",
    "bpf_map_lookup",
    "bpf_map_new",
    "bpf_prog_info",
    "bpf_prog_new",
    "bpf_prog_query",
    "bpf_raw_tracepoint_open",
    "CONSTANTS",
    "CONSTANT_SOURCES",
    "FD_MAX",
    "IMPLEMENTATION",
    "KNOB_OPTIONS",
    "MECH_NONE",
    "MECH_SETSOCKOPT",
    "MECH_SIO",
    "NKNOBS",
    "ROLLBACK_SHIFT",
    "STEP_KEEPALIVE",
    "STEP_PROBE",
    "Plan",
    "apply",
    "apply_policy",
    "bind_policy",
    "bind_state",
    "diag_parse",
    "knob_supported",
    "knob_unit",
    "mechanism",
    "pidfd_getfd",
    "pidfd_open",
    "proc_read",
    "read",
    "read_policy",
    "read_state",
]

TYPE_CHECKING = False
if TYPE_CHECKING:
    # For the type checker: the two backends have one interface (the stub says so).
    from typing import Any, Protocol

    from ._pure import (
        BPF_FACTS,
        BPF_SETSOCKOPT,
        BPF_SOCK_OPS,
        CONSTANT_SOURCES,
        CONSTANTS,
        FD_MAX,
        IMPLEMENTATION,
        KNOB_OPTIONS,
        MECH_NONE,
        MECH_SETSOCKOPT,
        MECH_SIO,
        NKNOBS,
        ROLLBACK_SHIFT,
        STEP_KEEPALIVE,
        STEP_PROBE,
        Plan,
        apply,
        apply_policy,
        bind_policy,
        bind_state,
        bpf_attach,
        bpf_config_read,
        bpf_config_write,
        bpf_counters_read,
        bpf_detach,
        bpf_fd_by_id,
        bpf_load,
        bpf_map_create,
        bpf_map_id,
        bpf_map_lookup,
        bpf_map_new,
        bpf_mount,
        bpf_obj_get,
        bpf_pin,
        bpf_prog_info,
        bpf_prog_new,
        bpf_prog_query,
        bpf_raw_tracepoint_open,
        diag_parse,
        knob_supported,
        knob_unit,
        mechanism,
        pidfd_getfd,
        pidfd_open,
        proc_read,
        read,
        read_policy,
        read_state,
    )

    class Backend(Protocol):
        """What the code that reads other processes' sockets needs of a backend module
        (``kaext._kaext``, ``kaext._pure``, or this module, which is one of them): the seam
        ``kaext.connections()``, ``Connection.apply`` and the inspector pass a backend
        through, so the tests can hand either implementation.  For the type checker only."""

        @property
        def IMPLEMENTATION(self) -> str: ...
        def __hash__(self) -> int: ...  # a module is: its dump parser is cached per backend
        def pidfd_open(self, pid: int, flags: int = 0) -> int: ...
        def pidfd_getfd(self, pidfd: int, fd: int) -> int: ...
        def proc_read(self, pidfd: int, fds: Any) -> list[tuple[int, int, int, int, int, int, int | None]]: ...
        def diag_parse(
            self,
            buf: bytearray,
            n: int,
            wanted: set[int],
            table: dict[int, Any],
            states: tuple[str, ...],
            timers: tuple[str, ...],
            keepalive_timer: int,
        ) -> bool: ...

else:

    def _choose():
        if os.environ.get("KAEXT_NO_EXTENSIONS", "") not in ("", "0"):
            from . import _pure

            return _pure
        try:
            # ``from ._kaext import``, not ``from . import _kaext``: the layer check (import-linter)
            # sees no Python source for the extension and would read the latter as ``import kaext``
            from ._kaext import IMPLEMENTATION  # noqa: F401
        except ImportError:
            from . import _pure

            return _pure
        return sys.modules[f"{__package__}._kaext"]

    _module = _choose()
    globals().update({name: getattr(_module, name) for name in __all__})
    del _module
