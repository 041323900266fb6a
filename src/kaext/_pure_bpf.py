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
# The map's layout (option order, flags), the claim nested enforcements leave and the
# helpers the programs call: Python's statement of what ext/kaext_bpf.h states for C
# (and ext/_kaext_bpf.pxi exports from it); a test holds the three equal.
BPF_FACTS: dict[str, int] = {
    "KEEPALIVE": 0,
    "IDLE": 1,
    "INTERVAL": 2,
    "COUNT": 3,
    "USER_TIMEOUT": 4,
    "CONNECT_TIMEOUT": 5,
    "NOPTIONS": 6,
    "READ_KEEPALIVE": 6,
    "RESPECT_EXISTING": 1,
    "FORCE": 2,
    "CLAIM": 0x6B616578,
    "CLAIM_AT": 12,
    "VALUE_SIZE": 48,
    "MAP_ENTRIES": 2,
    "FUNC_SETSOCKOPT": 49,
    "FUNC_GETSOCKOPT": 57,
}


def _no_bpf() -> OSError:
    return OSError(
        errno.ENOSYS, "kaext.enforce and kaext.watch need kaext's C extension (this is the pure-Python install)"
    )


def bpf_map_create() -> int:
    raise _no_bpf()


def bpf_config_write(map_fd: int, mask: int, flags: int, values: tuple[int, ...], cgroup_id: int) -> None:
    raise _no_bpf()


def bpf_config_read(map_fd: int) -> tuple[int, int, tuple[int, ...], int]:
    raise _no_bpf()


def bpf_counters_read(map_fd: int) -> tuple[int, int, int, int, int]:
    raise _no_bpf()


def bpf_load(kind: int, map_fd: int, strict: bool = False) -> int:
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


def bpf_prog_query(cgroup_fd: int, kind: int, effective: bool = False) -> list[int]:
    raise _no_bpf()


def bpf_fd_by_id(map: bool, obj_id: int) -> int:
    raise _no_bpf()


def bpf_prog_info(prog_fd: int) -> tuple[int, str, str, int]:
    raise _no_bpf()


def bpf_map_id(map_fd: int) -> int:
    raise _no_bpf()


# kaext.watch's calls (ext/_kaext_watch.pxi): the same, none here.


def bpf_map_new(map_type: int, key_size: int, value_size: int, max_entries: int, name: str) -> int:
    raise _no_bpf()


def bpf_prog_new(prog_type: int, insns: bytes, name: str) -> int:
    raise _no_bpf()


def bpf_raw_tracepoint_open(name: str, prog_fd: int) -> int:
    raise _no_bpf()


def bpf_map_lookup(map_fd: int, key: bytes, value_size: int) -> bytes:
    raise _no_bpf()
