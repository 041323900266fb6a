"""Error messages shared by both implementations (C extension and pure Python)."""

from __future__ import annotations

import errno as _errno
import os

from ._platform import KNOBS

#: Step numbers used by the C shim and the pure backend alike.
STEP_KEEPALIVE = 4
STEP_PROBE = 5


def fd_type_error(sock: object) -> TypeError:
    return TypeError(
        "expected a socket, an object with fileno(), or an int file descriptor; "
        f"got {type(sock).__name__}"
    )


def bad_fd_error(fd: int) -> OSError:
    return OSError(
        _errno.EBADF,
        f"{os.strerror(_errno.EBADF)}: file descriptor {fd} is not open "
        "(is the socket closed?)",
    )


def socket_error(err: int, step: int, option: str, value: int | None = None) -> OSError:
    """An OSError for a refused setsockopt/getsockopt, naming the knob and the option."""
    reason = os.strerror(err) if err > 0 else f"error {err}"
    if step == STEP_PROBE:
        what = "TCP_NODELAY probe"
    elif step == STEP_KEEPALIVE:
        what = "SO_KEEPALIVE" if value is None else f"SO_KEEPALIVE={value}"
    else:
        knob = KNOBS[step]
        what = f"{knob} ({option})" if value is None else f"{knob}={value} ({option})"
    hint = ""
    if err in (_errno.ENOPROTOOPT, _errno.EOPNOTSUPP) and (step < len(KNOBS) or step == STEP_PROBE):
        # whichever TCP-level call comes first is the one a UDP or AF_UNIX socket refuses
        hint = " - not a TCP socket (UDP or AF_UNIX?) or the kernel lacks this option"
    elif err == _errno.ENOTSOCK:
        hint = " - the file descriptor is not a socket"
    elif err == _errno.EBADF:
        hint = " - the file descriptor is not open (is the socket closed?)"
    return OSError(err, f"{reason}: {what}{hint}")
