"""The running kernel's version, for tests that state which behaviour they expect from which
Linux version (each such test names the version and the kernel change it comes from)."""

from __future__ import annotations

import os
import re


def linux_version() -> tuple[int, int]:
    """(major, minor) of the running Linux kernel (``uname -r``: ``6.1.176``, ``6.18.44-...``)."""
    match = re.match(r"(\d+)\.(\d+)", os.uname().release)
    assert match, f"not a Linux release: {os.uname().release!r}"
    return int(match.group(1)), int(match.group(2))


def linux_at_least(major: int, minor: int) -> bool:
    """The running kernel is Linux ``major.minor`` or later."""
    return linux_version() >= (major, minor)


#: pidfd_open(tid, PIDFD_THREAD): a pidfd for any thread, not only a thread-group leader, which
#: pidfd_getfd reaches the descriptors through -- Linux 6.9 (kernel/pid.c, "pidfd: implement
#: PIDFD_THREAD flag for pidfd_open()").  Before it, pidfd_open refuses the flag (EINVAL: only
#: PIDFD_NONBLOCK is accepted), and the pidfd of a leader whose thread has exited reaches no files.
PIDFD_THREAD = linux_at_least(6, 9)
