"""Run a command under a seccomp filter that refuses one system call with an errno, as
systemd-nspawn's default filter refuses pidfd_getfd with EPERM.

``python seccomp.py NR ERRNO -- COMMAND ...``: sets no_new_privs, installs a classic BPF
filter (``nr == NR`` -> ``SECCOMP_RET_ERRNO | ERRNO``, everything else allowed) with
prctl(PR_SET_SECCOMP) through ctypes, then execs COMMAND; the filter stays across exec
and is inherited by every child (the kernel's seccomp(2) rules).  Linux only.
"""

from __future__ import annotations

import ctypes
import os
import sys

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
BPF_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
BPF_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
BPF_RET_K = 0x06  # BPF_RET | BPF_K
#: pidfd_getfd's number: 438 in the unified table of the system calls added since Linux 5.1
#: (x86_64, aarch64, arm, riscv, ... alike).
PIDFD_GETFD = 438


class SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(SockFilter))]


def refuse(nr: int, err: int) -> None:
    """Install the filter in this process (irrevocably)."""
    program = (SockFilter * 4)(
        SockFilter(BPF_LD_W_ABS, 0, 0, 0),  # A = seccomp_data.nr
        SockFilter(BPF_JEQ_K, 0, 1, nr),
        SockFilter(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | (err & 0xFFFF)),
        SockFilter(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
    )
    prog = SockFprog(len(program), program)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, None, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


def command(nr: int, err: int, argv: list[str]) -> list[str]:
    """``argv`` run under the filter."""
    return [sys.executable, os.path.abspath(__file__), str(nr), str(err), "--", *argv]


if __name__ == "__main__":
    nr, err, sep, *argv = sys.argv[1:]
    assert sep == "--" and argv, "usage: seccomp.py NR ERRNO -- COMMAND ..."
    refuse(int(nr), int(err))
    os.execvp(argv[0], argv)
