"""kaext._pure_bpf -- kaext.enforce's BPF calls in the pure-Python backend: none.

The extension assembles and loads the BPF programs (``ext/_kaext_bpf.pxi`` over
``ext/kaext_bpf.h``); this module has the same names, and each call raises
``OSError(ENOSYS)`` saying that kaext.enforce needs the extension.  ``kaext._pure``
exports them as part of the backend interface.
"""

from __future__ import annotations

import errno

BPF_SOCK_OPS: int = 0
BPF_SETSOCKOPT: int = 1


def _no_bpf() -> OSError:
    return OSError(errno.ENOSYS, "kaext.enforce needs kaext's C extension (this is the pure-Python install)")


def bpf_map_create() -> int:
    raise _no_bpf()


def bpf_config_write(map_fd: int, mask: int, flags: int, values: tuple[int, ...], cgroup_id: int) -> None:
    raise _no_bpf()


def bpf_config_read(map_fd: int) -> tuple[int, int, tuple[int, ...], int]:
    raise _no_bpf()


def bpf_counters_read(map_fd: int) -> tuple[int, int, int, int, int]:
    raise _no_bpf()


def bpf_load(kind: int, map_fd: int) -> int:
    raise _no_bpf()


def bpf_pin(fd: int, path: str) -> None:
    raise _no_bpf()


def bpf_obj_get(path: str) -> int:
    raise _no_bpf()


def bpf_attach(cgroup_fd: int, prog_fd: int, kind: int) -> None:
    raise _no_bpf()


def bpf_detach(cgroup_fd: int, prog_fd: int, kind: int) -> None:
    raise _no_bpf()


def bpf_mount(path: str) -> None:
    raise _no_bpf()
