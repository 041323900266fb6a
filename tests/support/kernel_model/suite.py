"""The public-API suite against one OS's kernel model, in this (fresh) interpreter.

    python tests/support/kernel_model/suite.py NAME      (NAME: a key of kernel_model.MODELS)

Installs the model before ``import kaext`` (so kaext sees that OS's ``sys.platform``
and numbers, on the pure implementation), then checks set/get, Policy.apply and
from_socket, all-or-nothing under the kernel's own refusals, Policy.from_timeout,
connections() of this process and inject.  Expected values come from the model (the
kernel's behaviour) and the OS's headers, never from kaext.  Prints one line per
check; exits 1 if any failed.
"""

from __future__ import annotations

import errno
import math
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import kernel_model

NAME = sys.argv[1] if len(sys.argv) > 1 else "linux"
KERNEL = kernel_model.install(NAME)

import kaext  # noqa: E402
from kaext import _platform  # noqa: E402

if not (KERNEL.no_socket_module or KERNEL.sockets_fail):
    kernel_model.answer_raw_descriptors()

CHECKS: list[Callable[[], None]] = []


def check(fn: Callable[[], None]) -> Callable[[], None]:
    CHECKS.append(fn)
    return fn


def expect_oserror(fn: Callable[[], object], *errnos: int) -> OSError:
    try:
        fn()
    except OSError as exc:
        assert not errnos or exc.errno in errnos, f"errno {exc.errno} ({exc}), expected one of {errnos}"
        return exc
    raise AssertionError("no OSError raised")


@check
def family_and_implementation() -> None:
    assert kaext.IMPLEMENTATION == "python"
    assert KERNEL.family == _platform.FAMILY, (_platform.FAMILY, KERNEL.family)


if KERNEL.no_socket_module or KERNEL.sockets_fail:

    @check
    def nothing_offered_and_setters_raise() -> None:
        assert kaext.capabilities() == {}
        for call in (
            lambda: kaext.set_keepalive(3),
            lambda: kaext.set_keepalive(3, idle=5),
            lambda: kaext.set_user_timeout(3, 5),
            lambda: kaext.Policy(keepalive=True).apply(3),
            lambda: kaext.get_keepalive(3),
            lambda: kaext.connections(),
            kaext.system_defaults,
        ):
            exc = expect_oserror(call)
            assert exc.errno in (errno.ENOSYS, errno.ENOPROTOOPT) and str(exc), exc

    @check
    def the_tool_modules_import() -> None:
        """The tools and adapters import where Python has no socket module (their calls then
        say ENOSYS), as ``import kaext`` does; kaext.probe also without a select module."""
        import importlib

        select = sys.modules.get("select")
        sys.modules["select"] = None  # type: ignore[assignment]
        try:
            probe = importlib.import_module("kaext.probe")
        finally:
            if select is None:
                del sys.modules["select"]
            else:
                sys.modules["select"] = select
        exc = expect_oserror(lambda: probe.measure("127.0.0.1", 1, max_idle=2))
        assert exc.errno == errno.ENOSYS, exc
        for name in ("kaext.verify", "kaext.inspect", "kaext.run", "kaext.enforce", "kaext.watch", "kaext.adapters"):
            importlib.import_module(name)

else:
    import socket

    NUMBERS = KERNEL.numbers()
    CAPS = kaext.capabilities()
    #: knob -> the option the model's kernel stores it under
    #: (the SIO_KEEPALIVE_VALS ioctl's fields are kept by the model as sio_idle / sio_interval)
    OPTION = {
        knob: f"sio_{knob}" if knob_caps.option == "SIO_KEEPALIVE_VALS" else knob_caps.option
        for knob, knob_caps in CAPS.items()
    }
    READABLE = KERNEL.readable

    def shown(knob: str, seconds: float | int) -> float | int | None:
        """What get_keepalive / from_socket must report for a knob set to ``seconds``."""
        return seconds if knob in CAPS and CAPS[knob].readable else None

    @contextmanager
    def pair() -> Iterator[tuple[socket.socket, socket.socket, socket.socket]]:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            client = socket.create_connection(listener.getsockname())
            server, _ = listener.accept()
            with client, server:
                yield client, server, listener

    def stored(sock: socket.socket) -> dict[str, int]:
        return kernel_model.raw(KERNEL, sock)

    def offered(**values: float) -> dict[str, float]:
        """The knobs of ``values`` this OS offers (Windows before 1703: no count)."""
        return {knob: value for knob, value in values.items() if knob in CAPS}

    def in_unit(knob: str, seconds: float) -> int:
        if CAPS[knob].unit == _platform.SYN_UNIT:  # Linux TCP_SYNCNT: what the kernel's model gives up within
            return max(n for n in range(1, 128) if kernel_model._linux_syn_give_up(n, linear=0) <= seconds)
        return math.ceil(seconds * _platform.UNITS_PER_SECOND.get(CAPS[knob].unit, 1))

    def top_seconds(knob: str) -> float:
        """The knob's table maximum in seconds (a count as it is)."""
        caps = CAPS[knob]
        if knob == "count":
            return caps.max
        if caps.unit == _platform.SYN_UNIT:
            return kernel_model._linux_syn_give_up(caps.max, linear=0)
        return caps.max / _platform.UNITS_PER_SECOND[caps.unit]

    @check
    def numbers_are_the_headers() -> None:
        """Every knob kaext offers is set with the option number of this OS's headers."""
        for knob, caps in CAPS.items():
            if caps.option == "SIO_KEEPALIVE_VALS":
                assert KERNEL.windows_sio, knob
                continue
            assert caps.optname == NUMBERS[caps.option], (knob, caps.option, caps.optname)
        expected = {o for o in KERNEL.check if o in NUMBERS} | {"sio_idle", "sio_interval"}
        assert set(OPTION.values()) <= expected, (OPTION, expected)
        if KERNEL.windows_sio:
            assert OPTION["idle"] == "sio_idle" and OPTION["interval"] == "sio_interval", OPTION

    @check
    def fresh_socket_reads_within_range() -> None:
        """A fresh socket: no read-back outside a knob's own range; from_socket does not raise."""
        with socket.socket() as s:
            state = kaext.get_keepalive(s)
            for knob in ("idle", "interval", "count"):
                value = getattr(state, knob)
                if value is not None and knob in CAPS:
                    caps = CAPS[knob]
                    per = 1 if knob == "count" else _platform.UNITS_PER_SECOND[caps.unit]
                    assert caps.min <= value * per <= caps.max, (knob, value)
            kaext.Policy.from_socket(s)
            kaext.system_defaults()

    if not CAPS:

        @check
        def no_knobs_only_so_keepalive() -> None:
            with pair() as (client, _, _):
                exc = expect_oserror(lambda: kaext.set_keepalive(client, idle=60), errno.ENOPROTOOPT)
                assert "idle" in str(exc)
                expect_oserror(lambda: kaext.set_user_timeout(client, 30), errno.ENOPROTOOPT)
                kaext.set_keepalive(client)
                state = kaext.get_keepalive(client)
                assert state.enabled and (state.idle, state.interval, state.count) == (None, None, None), state

    else:

        @check
        def set_and_get() -> None:
            with pair() as (client, _, _):
                kaext.set_keepalive(client, **offered(idle=60, interval=10, count=5))  # type: ignore[arg-type]
                raw = stored(client)
                assert raw[OPTION["idle"]] == in_unit("idle", 60), raw
                if "interval" in OPTION:
                    assert raw[OPTION["interval"]] == in_unit("interval", 10), raw
                if "count" in OPTION:
                    assert raw[OPTION["count"]] == 5, raw
                state = kaext.get_keepalive(client)
                assert state.enabled
                expected = (shown("idle", 60), shown("interval", 10), shown("count", 5) if "count" in CAPS else None)
                assert (state.idle, state.interval, state.count) == expected, state
                if "user_timeout" in CAPS:
                    kaext.set_user_timeout(client, 30)
                    assert stored(client)[OPTION["user_timeout"]] == in_unit("user_timeout", 30)
                    assert kaext.get_user_timeout(client) == 30
                else:
                    expect_oserror(lambda: kaext.set_user_timeout(client, 30), errno.ENOPROTOOPT)

        @check
        def apply_and_from_socket() -> None:
            # a kernel with a fixed count (Windows before 1703) sends that many probes whatever kaext sets
            for budget in (2, 7, 60):
                policy = kaext.Policy.from_timeout(budget)
                count = policy.count if KERNEL.fixed_count is None else KERNEL.fixed_count
                assert policy.count is None or KERNEL.fixed_count is None, policy
                assert policy.idle + policy.interval * count <= budget, (budget, policy)
            if policy.user_timeout is not None:
                assert policy.user_timeout <= 60
            with pair() as (client, _, _):
                policy.apply(client)
                back = kaext.Policy.from_socket(client)
                for knob in ("idle", "interval", "count", "user_timeout"):
                    value = getattr(policy, knob)
                    assert getattr(back, knob) == (None if value is None else shown(knob, value)), (back, policy)
                raw = stored(client)
                assert raw[OPTION["idle"]] == in_unit("idle", policy.idle), raw

        @check
        def all_or_nothing_under_the_kernels_refusal() -> None:
            """For each knob, its table maximum after the others: the kernel accepts all, or
            refuses and the socket keeps every value from before."""
            before = kaext.Policy(**offered(idle=100, interval=20, count=9))
            refused = 0
            for knob in CAPS:
                top = top_seconds(knob)
                values = {"idle": 50, "interval": 10, "count": 5, knob: top}
                if "user_timeout" in CAPS and knob != "user_timeout":
                    values["user_timeout"] = 600
                values = {k: v for k, v in values.items() if k in CAPS}
                warnings.simplefilter("ignore", RuntimeWarning)  # short user timeouts, on purpose
                try:
                    after = kaext.Policy(**values)
                except ValueError:  # a total limit (macOS) refuses it before any call
                    continue
                with pair() as (client, _, _):
                    before.apply(client)
                    old = stored(client)
                    try:
                        after.apply(client)
                    except OSError as exc:
                        refused += 1
                        assert exc.errno == 22, exc
                        assert stored(client) == old, (knob, old, stored(client))
                    else:
                        raw = stored(client)
                        assert raw[OPTION[knob]] == in_unit(knob, top) if knob != "count" else top, raw
            if NAME == "freebsd-hz4000":
                assert refused >= 1, "the hz=4000 kernel refuses more than kaext's table"

        @check
        def connect_timeout_is_within_the_budget() -> None:
            """connect_timeout T on a fresh socket: the kernel gives a connect to a silent host up
            within T (Linux: at most T where T < 15 s; above, its linear SYN timeouts end it up to
            4 s after the SYN count's model time, which is <= T); from_timeout(T) sets it too."""
            if KERNEL.connect_bound is None:
                assert "connect_timeout" not in CAPS, CAPS
                return
            if "connect_timeout" not in CAPS:  # the pure backend where Python's socket module lacks it
                assert not any(o in KERNEL.python_names for o in KERNEL.check if "CONN" in o), KERNEL.python_names
                return
            option = OPTION["connect_timeout"]
            linux = CAPS["connect_timeout"].unit == _platform.SYN_UNIT
            for budget in (3, 5, 6, 7, 10, 14, 15, 20, 31, 60, 100, 127, 300):
                for policy in (kaext.Policy(connect_timeout=budget), kaext.Policy.from_timeout(budget)):
                    with socket.socket() as s:
                        policy.apply(s)
                        held = stored(s)[option]
                        bound = KERNEL.connect_bound(held)
                        assert bound <= (budget if not linux or budget < 15 else budget + 4), (budget, held, bound)
                        if linux:  # the SYN count's own model time is within the budget, the next one is not
                            model = kernel_model._linux_syn_give_up(held, linear=0)
                            assert model <= budget < kernel_model._linux_syn_give_up(held + 1, linear=0)
                            assert kernel_model._linux_syn_give_up(held, linear=0) == policy.connect_timeout
                        else:
                            assert bound == budget == policy.connect_timeout, (bound, budget, policy)
                        if CAPS["connect_timeout"].readable and READABLE:
                            assert kaext.Policy.from_socket(s).connect_timeout == policy.connect_timeout

        @check
        def user_timeout_zero_only_where_the_kernel_takes_it() -> None:
            """Where the kernel's 0 is not "system default" (Cygwin's TCP_MAXRTMS, Windows'
            TCP_MAXRT), kaext refuses 0 with ValueError before any call."""
            if "user_timeout" not in CAPS:
                return
            with pair() as (client, _, _):
                before = stored(client)
                if KERNEL.check[OPTION["user_timeout"]](0):
                    try:
                        kaext.set_user_timeout(client, 0)
                    except ValueError as exc:
                        assert "user_timeout" in str(exc), exc
                    else:
                        raise AssertionError("user_timeout=0 was accepted")
                    assert stored(client) == before
                else:
                    kaext.set_user_timeout(client, 0)
                    assert stored(client)[OPTION["user_timeout"]] == 0

        @check
        def one_knob_alone_is_what_the_kernel_makes_of_it() -> None:
            """The count (or interval) alone on a fresh socket: kaext reports what the kernel
            then holds (illumos derives the other from its abort threshold), or the kernel's
            refusal, with the socket unchanged."""
            for knob, value in (("count", 4), ("interval", 10)):
                if knob not in CAPS:
                    continue
                with pair() as (client, _, _):
                    before = stored(client)
                    try:
                        kaext.set_keepalive(client, **{knob: value})
                    except OSError:
                        assert stored(client) == before
                        continue
                    raw = stored(client)
                    state = kaext.get_keepalive(client)
                    if READABLE:
                        for k in ("idle", "interval", "count"):
                            if k in OPTION and CAPS[k].readable:
                                per = 1 if k == "count" else _platform.UNITS_PER_SECOND[CAPS[k].unit]
                                held = raw[OPTION[k]]
                                shown = getattr(state, k)
                                if CAPS[k].min <= held <= CAPS[k].max:
                                    assert shown == held / per if k != "count" else shown == held, (k, raw, state)
                                else:
                                    assert shown is None, (k, raw, state)

        @check
        def keepalive_sum_never_wraps() -> None:
            """xnu (and FreeBSD at hz 1000) add idle + interval * count in 32-bit ms, DragonFly keeps
            it in int ticks (31 bits of ms at hz 1000): a call
            setting one knob must count the socket's others; the stored sum stays below 2**32 ms."""
            if KERNEL.sum_bits is None or "count" not in CAPS:
                return
            limit_s = 2**KERNEL.sum_bits // 1000
            with pair() as (client, _, _):
                kaext.set_keepalive(client, interval=limit_s * 2 // 5, count=2)  # 80 % of the limit
                for call in (
                    lambda: kaext.set_keepalive(client, idle=limit_s // 2),
                    lambda: kaext.Policy(idle=limit_s // 2).apply(client),
                ):
                    try:
                        call()
                    except ValueError:
                        pass
                    raw = stored(client)
                    total_ms = 1000 * (raw[OPTION["idle"]] + raw[OPTION["interval"]] * raw[OPTION["count"]])
                    assert total_ms < 2**KERNEL.sum_bits, raw

        @check
        def wrong_sockets_are_refused_and_unchanged() -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                expect_oserror(lambda: kaext.set_keepalive(udp, idle=60))
                assert udp.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
            s = socket.socket()
            s.close()
            expect_oserror(lambda: kaext.set_keepalive(s, idle=60), errno.EBADF)

        @check
        def inject_reaches_new_connections() -> None:
            policy = kaext.Policy(**offered(idle=60, interval=10, count=5))
            with socket.create_server(("127.0.0.1", 0)) as listener:
                kaext.inject(policy)
                try:
                    client = socket.create_connection(listener.getsockname())
                finally:
                    kaext.uninject()
                with client:
                    assert stored(client)[OPTION["idle"]] == in_unit("idle", 60)
                    assert client.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)

        @check
        def accepted_socket_inherits_what_the_kernel_copies() -> None:
            with socket.create_server(("127.0.0.1", 0)) as listener:
                for knob in ("interval", "count"):
                    if knob in CAPS and CAPS[knob].mechanism.is_setsockopt:
                        value = in_unit(knob, 7) if knob == "interval" else 7
                        listener.setsockopt(socket.IPPROTO_TCP, CAPS[knob].optname, value)
                client = socket.create_connection(listener.getsockname())
                server, _ = listener.accept()
                with client, server:
                    raw = stored(server)
                    for knob in ("interval", "count"):
                        if knob in CAPS and CAPS[knob].mechanism.is_setsockopt:
                            option = OPTION[knob]
                            if option in KERNEL.not_inherited:  # the system's value (NetBSD's syn_cache_get)
                                assert raw[option] == KERNEL.fresh[option], raw
                            else:
                                assert raw[option] == stored(listener)[option], raw

        @check
        def warns_for_what_accepted_sockets_do_not_inherit() -> None:
            """Knobs set on a listening socket that the kernel does not copy to the sockets it
            accepts: kaext says so (RuntimeWarning naming them); the others: no warning."""
            not_inherited = {knob for knob in CAPS if OPTION[knob] in KERNEL.not_inherited}
            values = {"idle": 60, "interval": 10, "count": 5}
            with socket.create_server(("127.0.0.1", 0)) as listener:
                for knob in ("idle", "interval", "count"):
                    if knob not in CAPS:
                        continue
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        kaext.set_keepalive(listener, **{knob: values[knob]})
                    said = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
                    if knob in not_inherited:
                        assert said and knob in said[0], (knob, said)
                    else:
                        assert not said, (knob, said)

        @check
        def illumos_abort_threshold_never_wraps() -> None:
            """illumos multiplies count x interval (ms) in 32 bits: interval 1 s with count
            4294968 would store a 704 ms abort threshold; kaext refuses the count first."""
            if KERNEL.name != "illumos":
                return
            with pair() as (client, _, _):
                kaext.set_keepalive(client, interval=1)
                try:
                    kaext.set_keepalive(client, count=4294968)
                except ValueError as exc:
                    assert "count" in str(exc), exc
                raw = stored(client)
                assert raw["abort_ms"] == raw["TCP_KEEPCNT"] * raw["interval_ms"], raw

    @check
    def connections_of_this_process() -> None:
        with pair() as (client, _, _):
            kaext.set_keepalive(client)
            if _platform.CONNECTIONS == "":
                exc = expect_oserror(kaext.connections, errno.ENOSYS)
                assert "kaext" in str(exc) or "socket" in str(exc), exc
                return
            rows = [row for row in kaext.connections() if row.fd == client.fileno()]
            assert len(rows) == 1, rows
            row = rows[0]
            assert row.keepalive is not None and row.keepalive.enabled, row
            if "user_timeout" not in CAPS:
                assert row.user_timeout is None, row


def main() -> int:
    failed = 0
    for fn in CHECKS:
        try:
            fn()
        except Exception:
            failed += 1
            print(f"FAIL {NAME} {fn.__name__}")
            traceback.print_exc()
        else:
            print(f"ok   {NAME} {fn.__name__}")
    print(f"{NAME}: {len(CHECKS) - failed}/{len(CHECKS)} checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
