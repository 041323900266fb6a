"""Policy.from_socket: a socket's whole keepalive and user-timeout state as one Policy.

Sections: what a reading gives (expected values from Python's own ``socket.getsockopt``,
``sockets.raw``); the round trip onto a second, fresh socket, also from sockets configured
with plain ``socket.setsockopt`` (the kernel says whether the state was reproduced); the
errors, the same as get_keepalive's; the backend interface, both backends.
"""

from __future__ import annotations

import errno
import socket
import sys
import warnings
from collections.abc import Iterator
from types import ModuleType

import pytest
from sockets import KINDS, HasFileno, connect_timeout_of, open_socket, raw

import kaext
from kaext import Policy

# Two skip conditions, each on the tests that need it (neither is the module's):
# kaext's Linux reading, and plain setsockopt/getsockopt by Linux's option names.
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux socket options")
needs_option_names = pytest.mark.skipif(
    not all(hasattr(socket, n) for n in ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT", "TCP_USER_TIMEOUT")),
    reason="plain socket.getsockopt needs Linux's option names to check the result",
)

TCP = socket.IPPROTO_TCP


@pytest.fixture(params=KINDS)
def sock(request: pytest.FixtureRequest) -> Iterator[socket.socket]:
    with open_socket(*request.param) as s:
        yield s


def expected(s: socket.socket) -> Policy:
    """What from_socket should give, from plain getsockopt: the knobs only while keepalive is on."""
    on, idle, interval, count, user_timeout_ms = raw(s)
    connect = connect_timeout_of(s)  # TCP_SYNCNT, read whether keepalive is on or not
    with warnings.catch_warnings():  # a socket may well hold a user timeout shorter than its probing
        warnings.simplefilter("ignore", RuntimeWarning)
        if not on:
            return Policy(keepalive=False, user_timeout=user_timeout_ms / 1000, connect_timeout=connect)
        return Policy(
            idle=idle, interval=interval, count=count, user_timeout=user_timeout_ms / 1000, connect_timeout=connect
        )


def configure(s: socket.socket, keepalive: int, idle: int, interval: int, count: int, user_timeout_ms: int) -> None:
    """Set every knob with plain setsockopt, not through kaext."""
    s.setsockopt(TCP, socket.TCP_KEEPIDLE, idle)
    s.setsockopt(TCP, socket.TCP_KEEPINTVL, interval)
    s.setsockopt(TCP, socket.TCP_KEEPCNT, count)
    s.setsockopt(TCP, socket.TCP_USER_TIMEOUT, user_timeout_ms)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, keepalive)


def fresh_with_other_values() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    configure(s, 1, 11, 3, 2, 123_456)
    return s


with warnings.catch_warnings():
    # short user timeouts on purpose (the RuntimeWarning says they cut probing short)
    warnings.simplefilter("ignore", RuntimeWarning)
    POLICIES = [
        Policy(idle=7, interval=3, count=4, user_timeout=19),
        Policy(idle=60, interval=10, count=5),
        Policy(idle=32767, interval=1, count=127, user_timeout=2147483.647),
        Policy(user_timeout=0.001),
        Policy(user_timeout=1.5),
        Policy(),
        Policy(keepalive=False),
        Policy(keepalive=False, user_timeout=30),
    ]


# --------------------------------------------------------------------------------------
# a reading: what plain getsockopt reads, as an ordinary Policy
# --------------------------------------------------------------------------------------


@linux_only
def test_untouched_socket(sock: socket.socket) -> None:
    policy = Policy.from_socket(sock)
    assert policy == expected(sock)
    # a fresh socket: SO_KEEPALIVE off, no user timeout (0 = the system default)
    assert policy.keepalive is False and policy.user_timeout == 0.0
    assert (policy.idle, policy.interval, policy.count) == (None, None, None)


@linux_only
@pytest.mark.parametrize("policy", POLICIES, ids=str)
def test_values_are_what_getsockopt_reads(sock: socket.socket, policy: Policy) -> None:
    policy.apply(sock)
    got = Policy.from_socket(sock)
    assert got == expected(sock)
    on, idle, interval, count, user_timeout_ms = raw(sock)
    assert got.keepalive is bool(on)
    assert got.user_timeout == user_timeout_ms / 1000 and type(got.user_timeout) is float
    if on:
        assert (got.idle, got.interval, got.count) == (idle, interval, count)
        assert type(got.idle) is float and type(got.interval) is float and type(got.count) is int


@linux_only
def test_each_reading_is_the_sockets_current_state(tcp: socket.socket) -> None:
    """Read, change, read again on one socket: every reading follows the change."""
    for policy in [*POLICIES, POLICIES[0]]:
        policy.apply(tcp)
        assert Policy.from_socket(tcp) == expected(tcp)
        on, idle, interval, count, _ = raw(tcp)
        assert kaext.get_keepalive(tcp) == kaext.KeepaliveState(bool(on), float(idle), float(interval), count)


@linux_only
def test_the_policy_is_an_ordinary_policy(sock: socket.socket) -> None:
    made = Policy(idle=70, interval=8, count=6, user_timeout=120.5, connect_timeout=16)
    made.apply(sock)
    got = Policy.from_socket(sock)
    assert type(got) is Policy
    assert sock.getsockopt(TCP, socket.TCP_SYNCNT) == 3  # 1 + 2 + 4 + 8 = 15 s <= 16 s < 31 s
    assert got == made and hash(got) == hash(made)
    assert repr(got) == "Policy(idle=70.0, interval=8.0, count=6, user_timeout=120.5, connect_timeout=15.0)"
    assert str(got) == str(made) == "70s:8s:6 user_timeout=120500ms connect_timeout=15s"
    assert got.socket_options() == made.socket_options()
    with pytest.raises(AttributeError, match=r"Policy is immutable; make a new one \(cannot set 'idle'\)"):
        got.idle = 1  # type: ignore[misc]


@linux_only
def test_a_subclass_gets_its_own_type(tcp: socket.socket) -> None:
    class MyPolicy(Policy):
        __slots__ = ()

    Policy(idle=9, interval=4, count=2).apply(tcp)
    got = MyPolicy.from_socket(tcp)
    assert type(got) is MyPolicy
    assert got == Policy(idle=9, interval=4, count=2, user_timeout=0, connect_timeout=connect_timeout_of(tcp))


@linux_only
def test_file_descriptor_and_fileno_objects(tcp: socket.socket) -> None:
    Policy(idle=21, interval=5, count=7, user_timeout=56.5).apply(tcp)
    want = expected(tcp)
    assert Policy.from_socket(tcp.fileno()) == want
    assert Policy.from_socket(HasFileno(tcp)) == want
    assert raw(tcp) == (1, 21, 5, 7, 56500)  # reading changed nothing


# --------------------------------------------------------------------------------------
# the round trip: Policy.from_socket(s).apply(t) makes t read back like s
# --------------------------------------------------------------------------------------


@linux_only
@pytest.mark.parametrize("policy", POLICIES, ids=str)
def test_round_trip_onto_another_socket(sock: socket.socket, policy: Policy) -> None:
    """``Policy.from_socket(s).apply(t)`` makes ``t`` read back like ``s``."""
    policy.apply(sock)
    with socket.socket() as target:
        # the target starts from other values, so that nothing matches by accident
        Policy(idle=11, interval=12, count=13, user_timeout=170).apply(target)
        Policy.from_socket(sock).apply(target)
        source, copy = raw(sock), raw(target)
        assert copy[0] == source[0]  # SO_KEEPALIVE
        assert copy[4] == source[4]  # TCP_USER_TIMEOUT, also 0 (the system default)
        if source[0]:
            assert copy[1:4] == source[1:4]
        else:  # keepalive off: the source's knobs take no effect, the target keeps its own
            assert copy[1:4] == (11, 12, 13)


@linux_only
def test_user_timeout_zero_is_set_not_left(tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    """A socket without a user timeout gives a policy that sets 0 (the system default), so it round-trips."""
    source, target = tcp_pair
    Policy(idle=5, interval=2, count=3).apply(source)
    policy = Policy.from_socket(source)
    assert policy.user_timeout == 0.0
    Policy(idle=1, interval=1, count=1, user_timeout=9).apply(target)
    policy.apply(target)
    assert raw(target) == raw(source) == (1, 5, 2, 3, 0)


# Sources configured with plain setsockopt, targets starting from other values:


@needs_option_names
@pytest.mark.parametrize("kind", KINDS)
def test_reproduces_every_knob_set_with_setsockopt(kind: tuple[str, str]) -> None:
    with open_socket(*kind) as s, fresh_with_other_values() as target:
        configure(s, 1, 301, 29, 7, 600_000)
        Policy.from_socket(s).apply(target)
        assert raw(target) == raw(s) == (1, 301, 29, 7, 600_000)


@needs_option_names
def test_values_never_set_are_reproduced_as_the_kernel_reports_them() -> None:
    with socket.socket() as s, fresh_with_other_values() as target:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)  # idle/interval/count: sysctl defaults
        Policy.from_socket(s).apply(target)
        assert raw(target) == raw(s)


@needs_option_names
def test_keepalive_off_is_a_policy_that_turns_it_off() -> None:
    with socket.socket() as s, fresh_with_other_values() as target:
        configure(s, 0, 40, 5, 3, 9_000)
        policy = Policy.from_socket(s)
        assert policy.keepalive is False
        policy.apply(target)
        assert raw(target)[0] == 0
        assert raw(target)[4] == raw(s)[4] == 9_000


@needs_option_names
def test_user_timeout_in_milliseconds_round_trips() -> None:
    with socket.socket() as s, fresh_with_other_values() as target:
        configure(s, 1, 1, 1, 1, 2_501)  # not whole seconds; over idle + interval*count: no warning
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            Policy.from_socket(s).apply(target)
        assert raw(target)[4] == 2_501


@needs_option_names
def test_system_default_user_timeout_is_zero() -> None:
    with socket.socket() as s, fresh_with_other_values() as target:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        assert Policy.from_socket(s).user_timeout == 0
        Policy.from_socket(s).apply(target)
        assert raw(target)[4] == 0


# --------------------------------------------------------------------------------------
# errors: the same as get_keepalive's, and the kernel's own errno
# --------------------------------------------------------------------------------------


def _error(fn: object, target: object) -> OSError:
    with pytest.raises(OSError) as info:
        fn(target)  # type: ignore[operator]
    return info.value


@linux_only
def test_closed_socket_object_errs_like_get_keepalive() -> None:
    s = socket.socket()
    s.close()
    exc = _error(Policy.from_socket, s)
    assert exc.errno == errno.EBADF
    assert str(exc) == str(_error(kaext.get_keepalive, s))


@needs_option_names
def test_closed_fd_number_is_ebadf() -> None:
    s = socket.socket()
    fd = s.detach()
    socket.socket(fileno=fd).close()
    with pytest.raises(OSError) as exc:
        Policy.from_socket(fd)
    assert exc.value.errno == errno.EBADF


@linux_only
def test_udp_socket() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        exc = _error(Policy.from_socket, udp)
        with pytest.raises(OSError) as plain:  # what the kernel says to a TCP option on UDP
            udp.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert exc.errno == plain.value.errno
        assert (type(exc), str(exc)) == (type(_error(kaext.get_keepalive, udp)), str(_error(kaext.get_keepalive, udp)))


@needs_option_names
@pytest.mark.parametrize(
    ("make", "errnos"),
    [
        (lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM), (errno.ENOPROTOOPT, errno.EOPNOTSUPP)),
        (lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM), (errno.ENOPROTOOPT, errno.EOPNOTSUPP)),
    ],
    ids=["udp", "unix"],
)
def test_not_a_tcp_socket(make: object, errnos: tuple[int, ...]) -> None:
    with make() as s:  # type: ignore[operator]
        # what the kernel answers a plain getsockopt of the same option with
        with pytest.raises(OSError) as plain:
            s.getsockopt(TCP, socket.TCP_KEEPIDLE)
        with pytest.raises(OSError) as exc:
            Policy.from_socket(s)
    assert plain.value.errno in errnos
    assert exc.value.errno in errnos


@linux_only
def test_not_a_socket() -> None:
    with pytest.raises(TypeError) as info:
        Policy.from_socket("not a socket")  # type: ignore[arg-type]
    with pytest.raises(TypeError) as reference:
        kaext.get_keepalive("not a socket")  # type: ignore[arg-type]
    assert str(info.value) == str(reference.value)
    with open(__file__, "rb") as f:
        exc = _error(Policy.from_socket, f)
        assert exc.errno == errno.ENOTSOCK
        assert str(exc) == str(_error(kaext.get_keepalive, f))


# --------------------------------------------------------------------------------------
# the backend interface, both backends
# --------------------------------------------------------------------------------------


@pytest.fixture
def bound(backend: ModuleType) -> ModuleType:
    """The backend with the public types handed over, as the API layers do for the chosen one."""
    from kaext._capabilities import read_back_knobs

    backend.bind_state(kaext.KeepaliveState, read_back_knobs())
    backend.bind_policy(Policy, read_back_knobs())
    return backend


@linux_only
def test_backends_read_into_the_public_types(bound: ModuleType, tcp: socket.socket) -> None:
    backend = bound
    Policy(idle=31, interval=6, count=2, user_timeout=43.25).apply(tcp)
    on, idle, interval, count, user_timeout_ms = raw(tcp)
    state = backend.read_state(tcp)
    assert type(state) is kaext.KeepaliveState
    assert state == kaext.KeepaliveState(bool(on), float(idle), float(interval), count)
    policy = backend.read_policy(Policy, tcp)
    assert type(policy) is Policy
    assert policy == expected(tcp)
    assert policy.socket_options() == expected(tcp).socket_options()


@linux_only
@pytest.mark.thread_unsafe  # rebinds the backend's knob ranges for a moment
def test_a_value_outside_the_policy_range(bound: ModuleType, tcp: socket.socket) -> None:
    """A reading a policy could not carry is None (the policy leaves that knob), never a
    ValueError: from_socket does not raise on a socket it could read (issue 19)."""
    from kaext._capabilities import read_back_knobs

    backend = bound
    Policy(idle=100, interval=5, count=3).apply(tcp)
    knobs = read_back_knobs()
    assert knobs[0] is not None
    narrow = (knobs[0]._replace(max=50), *knobs[1:])  # as if idle could be at most 50 s here
    backend.bind_policy(Policy, narrow)
    backend.bind_state(kaext.KeepaliveState, narrow)
    try:
        policy = backend.read_policy(Policy, tcp)
        state = backend.read_state(tcp)
    finally:
        backend.bind_policy(Policy, knobs)
        backend.bind_state(kaext.KeepaliveState, knobs)
    assert policy == Policy(interval=5, count=3, user_timeout=0, connect_timeout=connect_timeout_of(tcp))
    assert state == kaext.KeepaliveState(True, None, 5.0, 3)
    assert backend.read_policy(Policy, tcp) == expected(tcp)
    assert raw(tcp) == (1, 100, 5, 3, 0)


@linux_only
def test_a_subclass_with_slots_of_its_own(bound: ModuleType, tcp: socket.socket) -> None:
    """The backends fill the fields through the slots the class itself declares: a subclass whose
    own slots come first in its instances still reads back into the right fields (the compiled
    backend finds each slot's place in the instance once, through the slot's descriptor)."""
    backend = bound

    class Tagged(Policy):
        __slots__ = ("a_tag", "b_tag")

    Policy(idle=31, interval=6, count=2, user_timeout=43.25).apply(tcp)
    policy = backend.read_policy(Tagged, tcp)
    assert type(policy) is Tagged
    assert (policy.idle, policy.interval, policy.count, policy.user_timeout, policy.keepalive) == (
        31.0,
        6.0,
        2,
        43.25,
        True,
    )
    assert policy == expected(tcp)
    with pytest.raises(AttributeError):
        policy.a_tag  # noqa: B018 -- never set: the backend wrote only the Policy fields


def test_bind_refuses_a_field_that_is_not_a_slot(backend: ModuleType) -> None:
    from kaext._capabilities import read_back_knobs

    class NoSlots:
        idle = interval = count = user_timeout = keepalive = _plan = None

    with pytest.raises((TypeError, AttributeError)):
        backend.bind_policy(NoSlots, read_back_knobs())
    backend.bind_policy(Policy, read_back_knobs())
