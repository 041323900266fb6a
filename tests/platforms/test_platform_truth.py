"""Platform arithmetic on every OS's table, run on Linux.

kaext's per-OS knowledge (option, unit, range, read-back, inheritance) lives in
``kaext._platform``; the arithmetic on top of it (unit conversion, ranges, error
texts, ``Policy.from_timeout``, ``Policy.for_idle_timeout``) must be right on every
OS, not only on the one running the tests.  Each test installs one OS's table as
the capabilities and checks the outcome against ``tests/data/platform_facts.json``,
whose facts come from each OS's own source (the sources are listed in that file):

* NetBSD counts TCP_KEEPIDLE / TCP_KEEPINTVL in slow ticks (PR_SLOWHZ = 2, half a
  second) and cannot read them back (no PRCO_GETOPT case);
* illumos bounds TCP_KEEPINTVL by the retransmit limits (at most 60 s by default)
  and the idle time at 1 s .. 10 days;
* macOS keeps idle + interval * count in 32-bit milliseconds;
* FreeBSD has TCP_MAXUNACKTIME (seconds) as its user timeout.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from types import ModuleType

import families
import pytest
from paths import DATA
from sockets import syn_give_up_seconds

import kaext
from kaext import _backend, _capabilities, _platform

FACTS = json.loads((DATA / "platform_facts.json").read_text())
KNOB_FACTS: dict[str, dict[str, dict[str, object]]] = FACTS["knobs"]
PER_SECOND: dict[str, int] = FACTS["units_per_second"]

pytestmark = pytest.mark.one_implementation


#: facts key -> (the _platform family, its table of knobs): the families section of the facts
_tables = families.fact_tables


TABLES = sorted(KNOB_FACTS)


def _bind_read_back() -> None:
    """Hand the capabilities in force to the backend's read-back, as the API layers do at import."""
    _backend.bind_state(kaext.KeepaliveState, _capabilities.read_back_knobs())
    _backend.bind_policy(kaext.Policy, _capabilities.read_back_knobs())


@pytest.fixture(autouse=True)
def _read_back_bound_to_the_real_table() -> Iterator[None]:
    """After each test (and after monkeypatch has put the real capabilities back)."""
    yield
    _bind_read_back()


def _install(monkeypatch: pytest.MonkeyPatch, os_key: str) -> dict[str, _capabilities.Knob]:
    """Make ``os_key``'s table the capabilities the API works with (arithmetic only: no socket)."""
    family, specs = _tables()[os_key]
    caps = {
        knob: _capabilities.Knob(
            option=spec.option,
            level=6,
            optname=0,
            unit=spec.unit,
            min=spec.min,
            max=spec.max,
            readable=spec.readable,
            mechanism=spec.describe(),
            note=spec.note,
        )
        for knob, spec in specs.items()
    }
    monkeypatch.setattr(_capabilities, "_CAPABILITIES", caps)
    monkeypatch.setattr(_platform, "FAMILY", family)
    _bind_read_back()
    return caps


def _range_s(os_key: str, knob: str) -> tuple[float, float]:
    """A time knob's range in seconds (from its range in the OS unit)."""
    fact = KNOB_FACTS[os_key][knob]
    if fact["unit"] == "syns":  # Linux TCP_SYNCNT: when the kernel gives the connect up
        return syn_give_up_seconds(int(fact["min"])), syn_give_up_seconds(int(fact["max"]))  # type: ignore[call-overload]
    per = PER_SECOND[str(fact["unit"])]
    return int(fact["min"]) / per, int(fact["max"]) / per  # type: ignore[call-overload]


# --------------------------------------------------------------------------------------
# The tables themselves
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("os_key", TABLES)
def test_table_matches_the_os_source(os_key: str) -> None:
    """Option, unit, range and read-back of every knob, per OS (defects 1, 7, 8)."""
    _, specs = _tables()[os_key]
    facts = KNOB_FACTS[os_key]
    assert set(specs) == set(facts), os_key
    for knob, fact in facts.items():
        spec = specs[knob]
        got = {"option": spec.option, "unit": spec.unit, "min": spec.min, "max": spec.max, "readable": spec.readable}
        assert got == {k: fact[k] for k in got}, f"{os_key} {knob}"


def test_darwin_listener_inheritance() -> None:
    """xnu tcp_input.c: an accepted socket copies interval and count, not idle nor the drop time (defect 4)."""
    expected = {knob for knob, fact in KNOB_FACTS["darwin"].items() if fact.get("inherited") is False}
    assert expected == {"idle", "user_timeout"}
    assert set(_platform.NOT_INHERITED_BY_ACCEPT.get("darwin", ())) == expected
    assert not _platform.NOT_INHERITED_BY_ACCEPT.get("linux")


@pytest.mark.parametrize("os_key", TABLES)
def test_listener_inheritance_is_the_os_sources(os_key: str) -> None:
    """What an accepted socket does not take over from its listener, per OS: NetBSD's
    syn_cache_get copies only TF_NODELAY, so none of the keepalive times (third audit)."""
    family, _ = _tables()[os_key]
    expected = {knob for knob, fact in KNOB_FACTS[os_key].items() if fact.get("inherited") is False}
    assert set(_platform.NOT_INHERITED_BY_ACCEPT.get(family, ())) == expected, os_key


# --------------------------------------------------------------------------------------
# Conversion to the OS unit, and back
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("os_key", TABLES)
def test_policy_converts_to_the_os_unit(monkeypatch: pytest.MonkeyPatch, os_key: str) -> None:
    """idle=60 s is 60 s, 60000 ms or 120 slow ticks; a fraction rounds up to the OS resolution."""
    _install(monkeypatch, os_key)
    facts = KNOB_FACTS[os_key]
    for knob in ("idle", "interval"):
        if knob not in facts:
            continue
        per = PER_SECOND[str(facts[knob]["unit"])]
        lo, hi = _range_s(os_key, knob)
        seconds = min(max(60, math.ceil(lo)), math.floor(hi))
        policy = kaext.Policy(**{knob: seconds})
        assert getattr(policy._plan, knob) == seconds * per, (os_key, knob)
        assert getattr(policy, knob) == seconds
        # just above a whole number of OS units: rounds up by one unit
        policy = kaext.Policy(**{knob: seconds - 0.999})
        assert getattr(policy._plan, knob) == (seconds - 1) * per + 1, (os_key, knob)


def test_netbsd_half_second_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    """NetBSD: idle=0.3 s is one slow tick (0.5 s), reported as 0.5; idle=60 arms 120 ticks, not 60 (30 s)."""
    _install(monkeypatch, "netbsd")
    policy = kaext.Policy(idle=0.3, interval=60)
    assert (policy._plan.idle, policy._plan.interval) == (1, 120)
    assert (policy.idle, policy.interval) == (0.5, 60)


@pytest.mark.parametrize("os_key", TABLES)
def test_range_errors_name_the_knob_and_the_range(monkeypatch: pytest.MonkeyPatch, os_key: str) -> None:
    """Just past the top of each knob's range: ValueError naming knob, option and the range in seconds."""
    _install(monkeypatch, os_key)
    for knob, fact in KNOB_FACTS[os_key].items():
        if knob == "count":
            too_big = int(fact["max"]) + 1  # type: ignore[call-overload]
        else:
            lo, hi = _range_s(os_key, knob)
            too_big = math.floor(hi) + 1
        with pytest.raises(ValueError) as info:
            kaext.Policy(**{knob: too_big})
        text = str(info.value)
        assert text.startswith(f"{knob}={too_big!r} is out of range"), text
        assert str(fact["option"]) in text, text
        if knob != "count":
            # the range in seconds, whatever the OS unit (s, ms or slow ticks)
            assert re.search(rf"\b{re.escape(_fmt_s(hi))} s\b", text), (text, hi)
            assert re.search(rf"\b{re.escape(_fmt_s(lo))} s\b", text), (text, lo)


def _fmt_s(seconds: float) -> str:
    return f"{seconds:.3f}".rstrip("0").rstrip(".")


# --------------------------------------------------------------------------------------
# Budgets: from_timeout and for_idle_timeout on every table
# --------------------------------------------------------------------------------------


def _assert_within(os_key: str, policy: kaext.Policy) -> None:
    facts = KNOB_FACTS[os_key]
    for knob in ("idle", "interval", "user_timeout"):
        value = getattr(policy, knob)
        if value is None:
            continue
        lo, hi = _range_s(os_key, knob)
        assert lo <= value <= hi, f"{os_key}: {knob}={value} outside {lo} .. {hi} s"
    if policy.count is not None:
        assert int(facts["count"]["min"]) <= policy.count <= int(facts["count"]["max"])  # type: ignore[call-overload]


BUDGETS = [2, 7, 60, 900, 7200, 86400, 10**6, 10**7]


@pytest.mark.parametrize("os_key", [k for k in TABLES if k != "openbsd"])
@pytest.mark.parametrize("budget", BUDGETS)
def test_from_timeout_on_every_table(monkeypatch: pytest.MonkeyPatch, os_key: str, budget: int) -> None:
    """Within the budget, within each knob's range, user timeout = the keepalive budget (defect 2)."""
    _install(monkeypatch, os_key)
    fixed = FACTS["fixed_probe_count"].get(os_key)
    if fixed is not None and budget < 1 + fixed * _range_s(os_key, "interval")[0]:
        with pytest.raises(ValueError, match=r"timeout=.* is too short for this platform"):
            kaext.Policy.from_timeout(budget)
        return
    policy = kaext.Policy.from_timeout(budget)
    _assert_within(os_key, policy)
    # a kernel with a fixed probe count (Windows before 1703: 10) sends that many whatever the policy
    count = policy.count if fixed is None else fixed
    total = (policy.idle or 0) + (policy.interval or 0) * (count or 0)
    assert 0 < total <= budget, (os_key, policy)
    if policy.user_timeout is not None:
        assert policy.user_timeout <= budget, (os_key, policy)
        # never more than idle + interval * count, never (as a unit slip would) far below it
        assert policy.user_timeout == math.floor(total) or policy.user_timeout == _range_s(os_key, "user_timeout")[1]


def test_from_timeout_darwin_7200(monkeypatch: pytest.MonkeyPatch) -> None:
    """macOS TCP_RXT_CONNDROPTIME is in seconds: not capped at 4294967 // 1000 = 4294 s."""
    _install(monkeypatch, "darwin")
    policy = kaext.Policy.from_timeout(7200)
    assert policy.user_timeout == policy.idle + policy.interval * policy.count > 4294  # type: ignore[operator]


def test_from_timeout_windows_sio_does_not_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    """SIO_KEEPALIVE_VALS takes ms: the idle maximum is 2147483 s, not 2147483647 s."""
    _install(monkeypatch, "windows-sio")
    policy = kaext.Policy.from_timeout(10**7)
    assert policy.idle is not None and policy.idle <= 2147483.647


def test_from_timeout_illumos_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    """illumos refuses TCP_KEEPINTVL above the 60 s retransmit maximum."""
    _install(monkeypatch, "illumos")
    policy = kaext.Policy.from_timeout(900)
    assert policy.interval is not None and policy.interval <= 60


@pytest.mark.parametrize("os_key", [k for k in TABLES if k != "openbsd"])
@pytest.mark.parametrize("timeout", [3, 60, 240, 350, 600, 3600, 10**6])
def test_for_idle_timeout_on_every_table(monkeypatch: pytest.MonkeyPatch, os_key: str, timeout: int) -> None:
    _install(monkeypatch, os_key)
    policy = kaext.Policy.for_idle_timeout(timeout)
    _assert_within(os_key, policy)
    assert policy.idle is not None and policy.idle + (policy.interval or 0) < timeout, (os_key, policy)


# --------------------------------------------------------------------------------------
# macOS: idle + interval * count in 32-bit milliseconds
# --------------------------------------------------------------------------------------


def test_darwin_refuses_a_total_that_wraps(monkeypatch: pytest.MonkeyPatch) -> None:
    """xnu keeps idle + interval * count in 32-bit ms: past 4294967.295 s it wraps (defect 8)."""
    _install(monkeypatch, "darwin")
    limit_s = FACTS["darwin_keepalive_total_ms_max"] / 1000
    kaext.Policy(idle=2147483, interval=1073742, count=2)  # 4294967 s: fits
    with pytest.raises(ValueError) as info:
        kaext.Policy(idle=2147483, interval=1073743, count=2)  # 4294969 s
    text = str(info.value)
    for word in ("idle", "interval", "count", "4294967"):
        assert word in text, text
    assert limit_s < 2147483 + 1073743 * 2
    # the same values are fine where the OS has no such limit
    _install(monkeypatch, "netbsd")
    kaext.Policy(idle=2147483, interval=1073743, count=2)


def test_darwin_timers_are_int32_ms(monkeypatch: pytest.MonkeyPatch) -> None:
    """xnu arms deadlines as int32 ms: idle or interval above 2147483 s would fire at once (issue 19)."""
    _install(monkeypatch, "darwin")
    kaext.Policy(idle=2147483, interval=2147483)
    for knob in ("idle", "interval"):
        with pytest.raises(ValueError, match=f"{knob}=2147484 is out of range"):
            kaext.Policy(**{knob: 2147484})


# --------------------------------------------------------------------------------------
# NetBSD: the knobs cannot be read back
# --------------------------------------------------------------------------------------


def test_unreadable_knobs_read_back_as_none(monkeypatch: pytest.MonkeyPatch, tcp_pair: tuple[object, object]) -> None:
    """With NetBSD's table, get_keepalive reports idle/interval/count as None, never a guess."""
    client, _ = tcp_pair
    kaext.set_keepalive(client, idle=30, interval=5, count=3)  # Linux's own table: readable
    _install(monkeypatch, "netbsd")
    state = kaext.get_keepalive(client)
    assert state.enabled is True
    assert (state.idle, state.interval, state.count) == (None, None, None)


# --------------------------------------------------------------------------------------
# All or nothing when the kernel refuses a value the range check let through
# --------------------------------------------------------------------------------------

_LINUX_OPTS = {"idle": 4, "interval": 5, "count": 6, "user_timeout": 18}  # include/uapi/linux/tcp.h


def _kernel_state(sock: object) -> tuple[int, ...]:
    import socket as _socket

    assert isinstance(sock, _socket.socket)
    return (
        sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_KEEPALIVE),
        *(sock.getsockopt(_socket.IPPROTO_TCP, opt) for opt in _LINUX_OPTS.values()),
    )


@pytest.mark.skipif(_platform.FAMILY != "linux", reason="uses Linux's own limits to make the kernel refuse")
@pytest.mark.parametrize("refused", ["count", "user_timeout"])
def test_kernel_refusal_rolls_back_the_knobs_already_written(
    monkeypatch: pytest.MonkeyPatch,
    tcp_pair: tuple[object, object],
    backend: ModuleType,
    refused: str,
) -> None:
    """A plan whose later knob the kernel refuses leaves the earlier knobs as they were (defect 3).

    Where another OS's kernel may refuse a value kaext's table allowed (illumos interval
    bounds, FreeBSD with hz > 1000, Windows TCP_MAXRT), the plan asks the backend to read
    the knobs written before it and put them back.  Here Linux is declared such an OS for
    ``refused``, and the plan carries a value the Linux kernel really refuses (count 200
    > MAX_TCP_KEEPCNT 127, a negative TCP_USER_TIMEOUT), after idle and interval were
    written; the kernel's own getsockopt says whether they were put back.
    """
    import errno

    client, _ = tcp_pair
    kaext.Policy(idle=100, interval=20, count=5, user_timeout=7).apply(client)
    kaext.disable_keepalive(client)
    before = _kernel_state(client)
    assert before == (0, 100, 20, 5, 7000)
    monkeypatch.setitem(_platform.KERNEL_MAY_REFUSE, "linux", (refused,))
    rollback = _capabilities.rollback_bits(0b1111)
    written_before = {"count": 0b0011, "user_timeout": 0b0111}[refused]
    assert rollback == written_before << _platform.ROLLBACK_SHIFT
    values = {"idle": 300, "interval": 30, "count": 6, "user_timeout": 9000}
    values[refused] = 200 if refused == "count" else -1
    with pytest.raises(OSError) as info:
        backend.apply(client, backend.Plan(0b1111 | rollback, *values.values(), 1))
    assert info.value.errno == errno.EINVAL
    assert info.value.knob == refused  # type: ignore[attr-defined]
    assert _kernel_state(client) == before, "the knobs written before the refusal must be restored"
    # the same plan without the rollback bits: the first knobs stay written (no reads, no cost)
    with pytest.raises(OSError, match="Invalid argument: .* - the kernel refused the value"):
        backend.apply(client, backend.Plan(0b1111, *values.values(), 1))
    assert _kernel_state(client)[1:3] == (300, 30)


@pytest.mark.parametrize(
    ("os_key", "expected"),
    [
        ("linux", set()),  # the kernel checks exactly kaext's ranges: nothing read first
        ("darwin", set()),
        ("illumos", {"idle", "interval"}),  # count may be refused (abort interval bounds)
        ("freebsd", {"idle", "interval", "count"}),  # TCP_MAXUNACKTIME bounded by hz
        ("netbsd", set()),  # nothing can be read back there
        ("windows", {"idle", "interval", "count"}),  # TCP_MAXRT may be refused
        ("windows-sio", {"count", "user_timeout"}),  # the ioctl comes last and may fail
    ],
)
def test_plans_ask_to_roll_back_where_the_kernel_may_refuse(
    monkeypatch: pytest.MonkeyPatch,
    os_key: str,
    expected: set[str],
) -> None:
    _install(monkeypatch, os_key)
    knobs = [k for k in ("idle", "interval", "count", "user_timeout") if k in KNOB_FACTS[os_key]]
    policy = kaext.Policy(**{k: 5 for k in knobs})
    bits = policy._plan.set_mask >> _platform.ROLLBACK_SHIFT
    assert {_platform.KNOBS[k] for k in range(4) if bits & (1 << k)} == expected


# --------------------------------------------------------------------------------------
# macOS: a listener's idle time and TCP_RXT_CONNDROPTIME are not inherited
# --------------------------------------------------------------------------------------


def test_darwin_warns_when_a_listener_gets_knobs_accepts_do_not_inherit(
    monkeypatch: pytest.MonkeyPatch,
    tcp_pair: tuple[object, object],
) -> None:
    """The warning's decision on real sockets: a listener (SO_ACCEPTCONN) vs a connected one (defect 4)."""
    import socket
    import warnings

    from kaext import _functions

    idle, interval, user_timeout = 1 << _platform.IDLE, 1 << _platform.INTERVAL, 1 << _platform.USER_TIMEOUT
    client, _ = tcp_pair
    with socket.create_server(("127.0.0.1", 0)) as listener:
        monkeypatch.setattr(_platform, "FAMILY", "darwin")
        with pytest.warns(RuntimeWarning, match=r"idle and user_timeout set on a listening socket"):
            _functions.warn_if_not_inherited(listener, idle | interval | user_timeout)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            _functions.warn_if_not_inherited(listener, interval)  # inherited on macOS
            _functions.warn_if_not_inherited(client, idle | user_timeout)  # not a listener
            monkeypatch.setattr(_platform, "FAMILY", "linux")
            _functions.warn_if_not_inherited(listener, idle | user_timeout)  # Linux: inherited


# --------------------------------------------------------------------------------------
# The run-time probe: only ENOPROTOOPT means "unsupported"; Windows' build fallback
# --------------------------------------------------------------------------------------


def test_probe_verdict_only_enoprotoopt_means_unsupported() -> None:
    """As Go decides on Windows: other errors say nothing about the option (defect 6)."""
    import errno

    from kaext import _pure

    assert _pure.probe_verdict(None) == 1
    assert _pure.probe_verdict(0) == 1
    assert _pure.probe_verdict(errno.ENOPROTOOPT) == 0
    for err in (errno.EINVAL, errno.ENOBUFS, errno.EMFILE, errno.EOPNOTSUPP, errno.EACCES):
        assert _pure.probe_verdict(err) == -1, errno.errorcode[err]


def test_windows_build_fallback() -> None:
    """When the probe says nothing on Windows, the build number decides (1709 / 1703)."""
    from kaext import _pure

    builds = FACTS["windows_min_build"]
    assert {k: v for k, v in _platform.WINDOWS_MIN_BUILD.items() if k in builds} == builds
    sio, setsockopt, none = _platform.MECH_SIO, _platform.MECH_SETSOCKOPT, _platform.MECH_NONE
    for knob, below in (("idle", sio), ("interval", sio), ("count", none)):
        k = _platform.KNOBS.index(knob)
        assert _pure.mechanism_from_build(k, builds[knob] - 1) == below, knob
        assert _pure.mechanism_from_build(k, builds[knob]) == setsockopt, knob
    assert _pure.mechanism_from_build(_platform.USER_TIMEOUT, 7601) == setsockopt  # TCP_MAXRT: Vista+
