"""Error messages shared by both implementations (C extension and pure Python)."""

from __future__ import annotations

import errno as _errno
import os

from ._platform import FAMILY, INT_MAX, KNOBS

#: Step numbers used by the C shim and the pure backend alike.
STEP_KEEPALIVE = 4
STEP_PROBE = 5

# The largest descriptor number either backend accepts (a SOCKET handle on Windows).
_FD_MAX = 2**63 - 1 if FAMILY == "windows" else INT_MAX


def fd_type_error(sock: object) -> TypeError:
    return TypeError(
        "expected a socket, an object with fileno(), or an int file descriptor; "
        f"got {type(sock).__name__}"
    )


def _decorate(exc: OSError, knob: str | None, option: str, value: object, fd: int | None = None) -> OSError:
    """Attach what the message says as attributes, for code that handles the error.

    Still a plain OSError (``except OSError`` and ``exc.errno`` work as for any socket
    call); ``exc.knob`` is "idle", "interval", "count", "user_timeout", "keepalive" or
    None, ``exc.option`` the OS option name ("TCP_KEEPIDLE", "SO_KEEPALIVE", ...; "" if
    none), ``exc.value`` the value in the option's own unit (None for a read).
    """
    exc.knob = knob  # type: ignore[attr-defined]
    exc.option = option  # type: ignore[attr-defined]
    exc.value = value  # type: ignore[attr-defined]
    exc.fd = fd  # type: ignore[attr-defined]
    return exc


def bad_fd_error(fd: int, fd_max: int | None = _FD_MAX) -> OSError:
    """EBADF before any system call: a closed socket (fileno() -1) or an impossible number."""
    if fd < 0:
        detail = f"file descriptor {fd} is not valid (a closed socket's fileno() is -1: is the socket closed?)"
    elif fd_max is not None and fd > fd_max:
        detail = f"file descriptor {fd} is out of range (0 .. {fd_max})"
    else:
        detail = f"file descriptor {fd} is not open (is the socket closed?)"
    return _decorate(OSError(_errno.EBADF, f"{os.strerror(_errno.EBADF)}: {detail}"), None, "", None, fd)


def _unit(knob: str, option: str) -> str:
    if knob == "count":
        return ""
    if knob == "user_timeout" or option == "SIO_KEEPALIVE_VALS":
        return " ms"
    return " s"


def _valid_range(knob: str) -> str:
    """What kaext accepts for ``knob`` here, from the capabilities (empty if unknown)."""
    from . import _api  # at call time: _api imports the backends, which import this module

    info = _api._caps().get(knob)
    if info is None:
        return ""
    return f"; kaext accepts {knob} = {_api._fmt_unit(info.min, info.unit)} .. {_api._fmt_unit(info.max, info.unit)} here"


def socket_error(err: int, step: int, option: str, value: int | None = None) -> OSError:
    """An OSError for a refused setsockopt/getsockopt/WSAIoctl.

    The message names the call, the knob, the OS option, the value in the option's unit
    and the reason (errno and strerror), plus a hint at the likely cause; the same facts
    are attributes of the exception (see ``_decorate``).
    """
    reason = os.strerror(err) if err > 0 else f"error {err}"
    call = "getsockopt" if value is None else "setsockopt"
    knob: str | None
    if step == STEP_PROBE:
        knob, option = None, "TCP_NODELAY"
        what = "getsockopt(IPPROTO_TCP, TCP_NODELAY), the check that the socket is TCP"
    elif step == STEP_KEEPALIVE:
        knob, option = "keepalive", "SO_KEEPALIVE"
        what = f"{call}(SOL_SOCKET, SO_KEEPALIVE" + ("" if value is None else f", {value}") + ")"
    else:
        knob = KNOBS[step]
        if option == "SIO_KEEPALIVE_VALS":
            call = "WSAIoctl"
        opt = option or "no option on this platform"
        what = f"{knob}" + ("" if value is None else f"={value}{_unit(knob, option)}") + f" ({call} {opt})"
    hint = ""
    if err in (_errno.ENOPROTOOPT, _errno.EOPNOTSUPP) and (step < len(KNOBS) or step == STEP_PROBE):
        # whichever TCP-level call comes first is the one a UDP or AF_UNIX socket refuses
        hint = " - not a TCP socket (UDP or AF_UNIX?) or the kernel lacks this option"
    elif err == _errno.ENOTSOCK:
        hint = " - the file descriptor is not a socket"
    elif err == _errno.EBADF:
        hint = " - the file descriptor is not open (is the socket closed?)"
    elif err == _errno.EINVAL and knob in KNOBS and value is not None:
        hint = " - the kernel refused the value" + _valid_range(knob)
    return _decorate(OSError(err, f"{reason}: {what}{hint}"), knob, option, value)
