"""Error messages shared by both implementations (C extension and pure Python).

Every message about a knob's value takes the unit and the range from that knob's
:class:`~kaext._platform.KnobSpec` on the running platform, under the mechanism that
sets it (the caller passes the spec it used): a macOS ``TCP_RXT_CONNDROPTIME`` value
is seconds, an old DragonFly ``TCP_KEEPIDLE`` value milliseconds.
"""

from __future__ import annotations

import errno as _errno
import os

from ._platform import (
    FAMILY,
    FD_MAX,
    KNOBS,
    STEP_KEEPALIVE,
    STEP_PROBE,
    SYN_UNIT,
    UNITS_PER_SECOND,
    KnobSpec,
    syn_seconds,
    unsupported_reason,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol

    class Ranged(Protocol):
        """A KnobSpec, or a capability (kaext.Knob) made from one."""

        @property
        def option(self) -> str: ...
        @property
        def unit(self) -> str: ...
        @property
        def min(self) -> int: ...
        @property
        def max(self) -> int: ...


def fd_type_error(sock: object) -> TypeError:
    return TypeError(
        f"expected a socket, an object with fileno(), or an int file descriptor; got {type(sock).__name__}"
    )


def fileno_of(sock: object) -> int:
    """``sock``'s file descriptor, not yet range-checked: ``sock`` itself if it is an int
    (not a bool), else what its ``fileno()`` returns.  Both backends' check of what they
    are given: TypeError naming what is wrong; an OSError, TypeError or ValueError that
    ``fileno`` raises itself passes through unchanged."""
    if isinstance(sock, int):
        if isinstance(sock, bool):
            raise fd_type_error(sock)
        return sock
    try:
        fileno = sock.fileno  # type: ignore[attr-defined]
    except AttributeError:
        raise fd_type_error(sock) from None
    except (OSError, TypeError, ValueError):
        raise
    except Exception as exc:  # a fileno property that raises
        raise TypeError(f"{type(sock).__name__}.fileno raised {exc!r}") from exc
    try:
        fd = fileno()
    except (OSError, TypeError, ValueError):
        raise
    except Exception as exc:
        raise TypeError(f"{type(sock).__name__}.fileno() raised {exc!r}") from exc
    if not isinstance(fd, int) or isinstance(fd, bool):
        raise TypeError(f"{type(sock).__name__}.fileno() returned {type(fd).__name__}, not int")
    return fd


def _decorate(exc: OSError, knob: str | None, option: str, value: object, fd: int | None = None) -> OSError:
    """Attach what the message says as attributes, for code that handles the error.

    Still a plain OSError (``except OSError`` and ``exc.errno`` work as for any socket
    call); ``exc.knob`` is "idle", "interval", "count", "user_timeout", "keepalive" or
    None, ``exc.option`` the OS option name ("TCP_KEEPIDLE", "SO_KEEPALIVE", ...; "" if
    none), ``exc.value`` the value in the option's own unit (None for a read), ``exc.fd``
    the file descriptor the call was made on (None where there was none).
    """
    exc.knob = knob  # type: ignore[attr-defined]
    exc.option = option  # type: ignore[attr-defined]
    exc.value = value  # type: ignore[attr-defined]
    exc.fd = fd  # type: ignore[attr-defined]
    return exc


def bad_fd_error(fd: int, fd_max: int | None = FD_MAX) -> OSError:
    """EBADF before any system call: a closed socket (fileno() -1) or an impossible number."""
    if fd < 0:
        detail = f"file descriptor {fd} is not valid (a closed socket's fileno() is -1: is the socket closed?)"
    elif fd_max is not None and fd > fd_max:
        detail = f"file descriptor {fd} is out of range (0 .. {fd_max})"
    else:
        detail = f"file descriptor {fd} is not open (is the socket closed?)"
    return _decorate(OSError(_errno.EBADF, f"{os.strerror(_errno.EBADF)}: {detail}"), None, "", None, fd)


def amount(n: int, unit: str) -> str:
    """``n`` in ``unit`` for a message: "30 s", "5 probes", "2147483647 ms (2147483.647 s)"."""
    if unit == "probes":
        return f"{n} probe" if n == 1 else f"{n} probes"
    if unit == "s":
        return f"{n} s"
    if unit == SYN_UNIT:
        return f"{n} SYN retransmission{'' if n == 1 else 's'} ({syn_seconds(n)} s)"
    seconds = f"{n / UNITS_PER_SECOND[unit]:.3f}".rstrip("0").rstrip(".")
    return f"{n} {unit} ({seconds} s)"


def range_error(knob: str, value: object, spec: Ranged, why: str = "") -> ValueError:
    """A value kaext refuses before any system call: names the knob, the option and its range."""
    extra = f" ({why})" if why else ""
    return ValueError(
        f"{knob}={value!r} is out of range{extra}: {spec.option} accepts "
        f"{amount(spec.min, spec.unit)} .. {amount(spec.max, spec.unit)} on this platform"
    )


def unsupported_error(knob: str) -> OSError:
    """ENOPROTOOPT for a knob this platform cannot set, with the reason."""
    return OSError(
        _errno.ENOPROTOOPT,
        f"{knob} cannot be set on this platform ({FAMILY}): {unsupported_reason(knob)}; see kaext.capabilities()",
    )


def socket_error(
    err: int, step: int, option: str, value: int | None = None, spec: KnobSpec | None = None, fd: int | None = None
) -> OSError:
    """An OSError for a refused setsockopt/getsockopt/WSAIoctl.

    ``step`` is the knob index or ``STEP_KEEPALIVE`` / ``STEP_PROBE``; ``spec`` is the
    knob's spec under the mechanism the backend used (None where it has none).  The
    message names the call, the knob, the OS option, the value in the option's unit and
    the reason (errno and strerror), plus a hint at the likely cause; the same facts are
    attributes of the exception (see ``_decorate``), ``fd`` the socket's file descriptor.
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
        if spec is not None and spec.ioctl:
            call = "WSAIoctl"
        unit = f" {spec.unit}" if spec is not None and spec.unit in UNITS_PER_SECOND else ""
        opt = option or "no option on this platform"
        what = f"{knob}" + ("" if value is None else f"={value}{unit}") + f" ({call} {opt})"
    hint = ""
    if err in (_errno.ENOPROTOOPT, _errno.EOPNOTSUPP) and (step < len(KNOBS) or step == STEP_PROBE):
        # whichever TCP-level call comes first is the one a UDP or AF_UNIX socket refuses
        hint = " - not a TCP socket (UDP or AF_UNIX?) or the kernel lacks this option"
    elif err == _errno.ENOTSOCK:
        hint = " - the file descriptor is not a socket"
    elif err == _errno.EBADF:
        hint = " - the file descriptor is not open (is the socket closed?)"
    elif err == _errno.EINVAL and knob in KNOBS and value is not None:
        hint = " - the kernel refused the value"
        if spec is not None:
            hint += f"; kaext accepts {knob} = {amount(spec.min, spec.unit)} .. {amount(spec.max, spec.unit)} here"
    return _decorate(OSError(err, f"{reason}: {what}{hint}"), knob, option, value, fd)
