# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: freethreading_compatible=True
"""kaext._kaext -- the compiled backend.

Calls setsockopt/getsockopt (and WSAIoctl on Windows) through the C shim
``kaext_shim.h``, which takes every constant from the platform's headers.  The
layers above (``kaext._capabilities`` and up) validate and convert values; this
module only talks to the kernel.  ``kaext._pure`` implements the same interface in
Python; the numbers both share (knob indices, steps, mechanisms) are stated once
per language: here by the shim, in Python by ``kaext._platform`` (the tests check
that they agree).

One extension module in three parts: socket options here; running processes in
``_kaext_proc.pxi`` and kaext.enforce's BPF programs in ``_kaext_bpf.pxi``, both
Linux only, included at the end.  ``kaext._pure`` is split the same way: its peers of
the two ``.pxi`` files are ``kaext._pure_proc`` and ``kaext._pure_bpf``.
"""

from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_AsUnsignedLongLong
from libc.limits cimport LLONG_MAX, ULLONG_MAX
from libc.errno cimport errno as c_errno
from libc.stdlib cimport free, malloc

# Slots of the API's value types (``__slots__`` members) and their instances, made and
# filled from C the way ``object.__new__`` and ``object.__setattr__`` would, without looking
# a name up on every call.  Only the Limited API (the extension is built for ``cp310-abi3``):
# a slot is its byte offset in the instance, found once at bind time (``_slot``), and an
# instance comes from the type's own ``tp_alloc`` (``PyType_GetSlot``, heap types).
cdef extern from *:
    """
    /* The object pointer stored at byte offset `off` of `o` (a __slots__ member). */
    #define KAEXT_SLOT(o, off) ((PyObject **)((char *)(o) + (off)))

    /* Set slot `off` of `o`, a new instance no other thread sees yet; v is not NULL. */
    static int kaext_slot_set(PyObject *o, Py_ssize_t off, PyObject *v)
    {
        PyObject *old = *KAEXT_SLOT(o, off);
        Py_INCREF(v);
        *KAEXT_SLOT(o, off) = v;
        Py_XDECREF(old);
        return 0;
    }

    /* Slot `off` of `o` (a new reference), AttributeError when it was never set; the slots
       read this way are set once, when the instance is made (the types are immutable). */
    static PyObject *kaext_slot_get(PyObject *o, Py_ssize_t off)
    {
        PyObject *v = *KAEXT_SLOT(o, off);
        if (v == NULL) {
            PyErr_SetString(PyExc_AttributeError, "kaext: slot not set");
            return NULL;
        }
        Py_INCREF(v);
        return v;
    }

    /* The offset of the slot that holds `sentinel` in `o` (basicsize bytes), -1 if none. */
    static Py_ssize_t kaext_slot_find(PyObject *o, Py_ssize_t basicsize, PyObject *sentinel)
    {
        Py_ssize_t off;
        for (off = (Py_ssize_t)sizeof(PyObject); off + (Py_ssize_t)sizeof(PyObject *) <= basicsize;
             off += (Py_ssize_t)sizeof(PyObject *)) {
            if (*KAEXT_SLOT(o, off) == sentinel)
                return off;
        }
        return -1;
    }

    /* A new, empty instance of a heap type that takes no arguments to make (object.__new__),
       through the allocator cached at bind time. */
    typedef PyObject *(*kaext_allocfunc)(PyTypeObject *, Py_ssize_t);
    static kaext_allocfunc kaext_alloc_of(PyObject *cls)
    {
        return (kaext_allocfunc)PyType_GetSlot((PyTypeObject *)cls, Py_tp_alloc);
    }
    static PyObject *kaext_alloc(kaext_allocfunc f, PyObject *cls)
    {
        return f((PyTypeObject *)cls, 0);
    }
    """
    ctypedef void *kaext_allocfunc
    int kaext_slot_set(object o, Py_ssize_t off, object v) except -1
    object kaext_slot_get(object o, Py_ssize_t off)
    Py_ssize_t kaext_slot_find(object o, Py_ssize_t basicsize, object sentinel)
    kaext_allocfunc kaext_alloc_of(object cls)
    object kaext_alloc(kaext_allocfunc f, object cls)
    char *PyByteArray_AsString(object o) except NULL
    Py_ssize_t PyByteArray_Size(object o) except -1

cdef extern from "kaext_shim.h" nogil:
    # The C type is int (POSIX) or SOCKET (Windows: UINT_PTR, 32 bits on win32 and
    # 64 on win64).  Cython never converts a Python object to it: _fd() reads the
    # number as unsigned long long, checks it against KAEXT_SOCK_MAX, then casts.
    ctypedef Py_ssize_t kaext_sock
    unsigned long long KAEXT_SOCK_MAX
    enum:
        KAEXT_IDLE
        KAEXT_INTERVAL
        KAEXT_COUNT
        KAEXT_USER_TIMEOUT
        KAEXT_CONNECT_TIMEOUT
        KAEXT_NKNOBS
        KAEXT_STEP_KEEPALIVE
        KAEXT_STEP_PROBE
        KAEXT_MECH_NONE
        KAEXT_MECH_SETSOCKOPT
        KAEXT_MECH_SIO
    unsigned KAEXT_WANT_ALL
    int KAEXT_KNOB_LEVEL
    int KAEXT_ROLLBACK_SHIFT
    ctypedef struct kaext_constant:
        const char *name
        long long value
        const char *header
        int fallback
    const kaext_constant kaext_constants[]
    const int kaext_knob_have[]
    const int kaext_knob_opt[]
    const char *const kaext_knob_name[]
    ctypedef struct kaext_plan:
        unsigned set_mask
        int value[KAEXT_NKNOBS]
        int keepalive
    ctypedef struct kaext_state:
        unsigned have
        int value[KAEXT_NKNOBS]
        int keepalive
    int kaext_probe_mechanisms(int *mech)
    int kaext_knob_supported(int k)
    const char *kaext_knob_unit(int k, int m)
    int kaext_apply(kaext_sock fd, const kaext_plan *plan, const int *mech, int *step)
    int kaext_read_some(kaext_sock fd, unsigned want, const int *mech, kaext_state *st, int *step)

import sys

IMPLEMENTATION = "c"

#: The shim's numbers, for the tests to compare with kaext._platform's.
NKNOBS = KAEXT_NKNOBS
STEP_KEEPALIVE = KAEXT_STEP_KEEPALIVE
STEP_PROBE = KAEXT_STEP_PROBE
ROLLBACK_SHIFT = KAEXT_ROLLBACK_SHIFT
MECH_NONE = KAEXT_MECH_NONE
MECH_SETSOCKOPT = KAEXT_MECH_SETSOCKOPT
MECH_SIO = KAEXT_MECH_SIO

cdef dict _constants = {}
cdef dict _sources = {}
cdef Py_ssize_t _i = 0
while kaext_constants[_i].name != NULL:
    _constants[kaext_constants[_i].name.decode()] = kaext_constants[_i].value
    _sources[kaext_constants[_i].name.decode()] = kaext_constants[_i].header.decode()
    _i += 1

#: Every name the platform headers define, with its value.
CONSTANTS = _constants
#: The header each constant came from.
CONSTANT_SOURCES = _sources
#: Per knob: (header name, level, optname), or None where this OS has no such knob.
# (list comprehensions, not generator expressions, in this module: a generator pulls
# Cython's coroutine support, about 10 kB, into the extension)
KNOB_OPTIONS = tuple([
    (kaext_knob_name[k].decode(), KAEXT_KNOB_LEVEL, kaext_knob_opt[k]) if kaext_knob_have[k] else None
    for k in range(KAEXT_NKNOBS)
])
#: The largest socket handle accepted (INT_MAX on POSIX, INVALID_SOCKET - 1 on Windows).
FD_MAX = KAEXT_SOCK_MAX

# How each knob is set on the running system (KAEXT_MECH_*): the module's state,
# probed once now, before any other thread can use the module, and only read after.
cdef int _mech[KAEXT_NKNOBS]
kaext_probe_mechanisms(_mech)


cdef class Plan:
    """What to write, in each knob's OS unit: the C shim's ``kaext_plan``.

    ``set_mask`` bit k says knob k (idle, interval, count, user_timeout, connect_timeout) is written
    (``connect_timeout`` last, after ``keepalive``, 0 when not given);
    bit ``ROLLBACK_SHIFT`` + k (8 + k) says knob k is read first and put back if a later
    call fails (``kaext._platform.KERNEL_MAY_REFUSE``); ``keepalive`` is -1 (leave
    SO_KEEPALIVE), 0 (off) or 1 (on).  Immutable.
    """

    cdef kaext_plan c

    _fields = ("set_mask", "idle", "interval", "count", "user_timeout", "keepalive", "connect_timeout")

    def __cinit__(self, unsigned set_mask, int idle, int interval, int count, int user_timeout, int keepalive,
                  int connect_timeout=0):
        self.c.set_mask = set_mask
        self.c.value[KAEXT_IDLE] = idle
        self.c.value[KAEXT_INTERVAL] = interval
        self.c.value[KAEXT_COUNT] = count
        self.c.value[KAEXT_USER_TIMEOUT] = user_timeout
        self.c.value[KAEXT_CONNECT_TIMEOUT] = connect_timeout
        self.c.keepalive = keepalive

    @property
    def set_mask(self):
        return self.c.set_mask

    @property
    def idle(self):
        return self.c.value[KAEXT_IDLE]

    @property
    def interval(self):
        return self.c.value[KAEXT_INTERVAL]

    @property
    def count(self):
        return self.c.value[KAEXT_COUNT]

    @property
    def user_timeout(self):
        return self.c.value[KAEXT_USER_TIMEOUT]

    @property
    def connect_timeout(self):
        return self.c.value[KAEXT_CONNECT_TIMEOUT]

    @property
    def keepalive(self):
        return self.c.keepalive

    def __repr__(self):
        fields = ", ".join([f"{name}={getattr(self, name)!r}" for name in self._fields])
        return f"Plan({fields})"


def knob_supported(int k):
    """Does the running kernel accept knob ``k``'s socket option (probed on a throwaway socket)?"""
    return kaext_knob_supported(k) == 1


def mechanism(int k):
    """How knob ``k`` is set on the running system (``MECH_*``), probed once at import.

    ``MECH_SETSOCKOPT``: setsockopt(IPPROTO_TCP, option); ``MECH_SIO``: Windows without
    TCP_KEEPIDLE (before 10 version 1709, wine): WSAIoctl(SIO_KEEPALIVE_VALS), in ms,
    write-only; ``MECH_NONE``: not available (no option, or the kernel refused it).
    """
    if k < 0 or k >= KAEXT_NKNOBS:
        return KAEXT_MECH_NONE
    return _mech[k]


def knob_unit(int k):
    """The unit the shim takes knob ``k`` in under its mechanism: "s", "ms", "ticks" (NetBSD), "probes" or ""."""
    if k < 0 or k >= KAEXT_NKNOBS:
        return ""
    return kaext_knob_unit(k, _mech[k]).decode()


# socket.socket, once the socket module is loaded: its fileno() always returns an int
# (-1 when closed), so the checks for arbitrary fileno() implementations can be skipped.
cdef object _socket_type = None
cdef object _socket_fileno = None  # socket.socket.fileno, called unbound


cdef object _fileno_of = None      # kaext._errors.fileno_of, on first use


cdef int _fd(object sock, kaext_sock *out) except -1:
    """The socket handle of ``sock`` into ``out``, checked against KAEXT_SOCK_MAX."""
    global _socket_type, _socket_fileno, _fileno_of
    cdef object fd
    if type(sock) is _socket_type and _socket_fileno is not None:
        fd = _socket_fileno(sock)  # the common case: one call, no attribute lookup
    elif type(sock) is int:
        fd = sock
    else:
        if _socket_type is None:
            cls = getattr(sys.modules.get("socket"), "socket", None)
            _socket_fileno = getattr(cls, "fileno", None)  # before the type: the fast path checks both
            _socket_type = cls
        if _fileno_of is None:
            from kaext._errors import fileno_of
            _fileno_of = fileno_of
        fd = _fileno_of(sock)  # anything else: the checks both backends share
    # fd is an int here: compare in C (no Python int made for the bound)
    cdef int overflow = 0
    cdef long long value = PyLong_AsLongLongAndOverflow(fd, &overflow)
    cdef unsigned long long number = 0
    if overflow == 0 and value >= 0:
        number = <unsigned long long>value
    elif overflow > 0 and KAEXT_SOCK_MAX > <unsigned long long>LLONG_MAX:  # a 64-bit SOCKET
        try:
            number = PyLong_AsUnsignedLongLong(fd)
        except OverflowError:
            number = ULLONG_MAX
    else:
        number = ULLONG_MAX  # negative, or beyond every handle
    if number > KAEXT_SOCK_MAX:
        from kaext._errors import bad_fd_error
        raise bad_fd_error(fd)
    out[0] = <kaext_sock>number
    return 0


cdef object _fail(int err, int step, Plan plan, kaext_sock fd):
    from kaext._errors import socket_error
    from kaext._platform import KNOBS, spec_for
    cdef object value = None
    spec = None
    name = ""
    if step < KAEXT_NKNOBS:
        name = kaext_knob_name[step].decode()
        spec = spec_for(KNOBS[step], name, _mech[step])
        if spec is not None and spec.ioctl:
            name = spec.option
    if plan is not None:
        if step < KAEXT_NKNOBS:
            value = plan.c.value[step]
        elif step == KAEXT_STEP_KEEPALIVE:
            value = plan.c.keepalive
    raise socket_error(err, step, name, value, spec, fd)


cdef inline object _apply(object sock, Plan plan):
    cdef int step = 0, err
    cdef kaext_sock fd
    _fd(sock, &fd)
    err = kaext_apply(fd, &plan.c, _mech, &step)
    if err:
        _fail(err, step, plan, fd)


def apply(object sock, Plan plan):
    """Write a :class:`Plan` (values in each knob's OS unit, already range-checked).

    Raises OSError; on error the socket is unchanged.
    """
    _apply(sock, plan)


def apply_policy(self, sock):
    """``Policy.apply``: this policy to ``sock``, all or nothing (see ``kaext.Policy.apply``).

    One C call per policy, the hot path: the plan is read from its slot directly once
    ``bind_policy`` has named the type (no attribute lookup).
    """
    if type(self) is _policy_type:
        _apply(sock, kaext_slot_get(self, _policy_slot[6]))
    else:
        _apply(sock, self._plan)


def read(object sock, unsigned int want=KAEXT_WANT_ALL):
    """Read ``(keepalive, idle, interval, count, user_timeout, connect_timeout)`` in OS units.

    ``want`` picks what to read (bit k: knob k, bit STEP_KEEPALIVE: SO_KEEPALIVE); what
    was not asked for or cannot be read back is None (keepalive: 0).
    """
    cdef kaext_state st
    cdef int step = 0, err
    cdef kaext_sock fd
    _fd(sock, &fd)
    err = kaext_read_some(fd, want, _mech, &st, &step)
    if err:
        _fail(err, step, None, fd)
    return (
        st.keepalive,
        st.value[KAEXT_IDLE] if st.have & (1 << KAEXT_IDLE) else None,
        st.value[KAEXT_INTERVAL] if st.have & (1 << KAEXT_INTERVAL) else None,
        st.value[KAEXT_COUNT] if st.have & (1 << KAEXT_COUNT) else None,
        st.value[KAEXT_USER_TIMEOUT] if st.have & (1 << KAEXT_USER_TIMEOUT) else None,
        st.value[KAEXT_CONNECT_TIMEOUT] if st.have & (1 << KAEXT_CONNECT_TIMEOUT) else None,
    )


# --------------------------------------------------------------------------------------
# Read-back straight into the public value types
# --------------------------------------------------------------------------------------
#
# The layers above hand their types over once, at import (bind_state, bind_policy), with
# the knobs capabilities() lists: per knob None (not listed: reads back as None) or its
# kaext.Knob (unit, range, option; one that is not readable reads back as None).  A read
# then makes the instance here, in one call: no Python-level work per knob.

cdef object _state_type = None
cdef Py_ssize_t _state_slot[4]       # enabled, idle, interval, count: byte offsets
cdef kaext_allocfunc _state_alloc
cdef object _policy_type = None
cdef Py_ssize_t _policy_slot[7]      # idle, interval, count, user_timeout, connect_timeout, keepalive, _plan
cdef kaext_allocfunc _policy_alloc
# 0: reads back as None, 1: a count (int), 2: seconds (float), 3: Linux TCP_SYNCNT (seconds, syn_seconds)
cdef int _kind[KAEXT_NKNOBS]
cdef double _per_second[KAEXT_NKNOBS]
cdef long long _lo[KAEXT_NKNOBS]
cdef long long _hi[KAEXT_NKNOBS]
cdef tuple _knobs = ()                # the Knob objects, for the range error
cdef unsigned _WANT_STATE = ((1u << KAEXT_STEP_KEEPALIVE) | (1u << KAEXT_IDLE)
                             | (1u << KAEXT_INTERVAL) | (1u << KAEXT_COUNT))


cdef Py_ssize_t _slot(object cls, str name) except -1:
    """The byte offset of ``cls``'s ``__slots__`` member ``name`` in its instances: where a
    sentinel set through the member's own descriptor lands in a new, empty instance."""
    from types import MemberDescriptorType
    descriptor = cls.__dict__.get(name)
    if not isinstance(descriptor, MemberDescriptorType):
        raise TypeError(f"{cls.__name__}.{name} is not a __slots__ field")
    probe = kaext_alloc(kaext_alloc_of(cls), cls)
    sentinel = object()
    descriptor.__set__(probe, sentinel)
    cdef Py_ssize_t off = kaext_slot_find(probe, cls.__basicsize__, sentinel)
    if off < 0:
        raise TypeError(f"{cls.__name__}.{name}: slot not found in the instance")
    return off


cdef _bind_knobs(tuple knobs):
    global _knobs
    from kaext._platform import SYN_UNIT, UNITS_PER_SECOND
    cdef int k
    for k in range(KAEXT_NKNOBS):
        knob = knobs[k]
        if knob is None or not knob.readable:  # NetBSD's TCP_KEEP*, WSAIoctl: never a guess
            _kind[k] = 0
            continue
        if knob.unit == SYN_UNIT:
            _kind[k] = 3
            _per_second[k] = 1.0
        else:
            _kind[k] = 1 if knob.unit == "probes" else 2
            _per_second[k] = 1.0 if knob.unit == "probes" else UNITS_PER_SECOND[knob.unit]
        _lo[k] = knob.min
        _hi[k] = knob.max
    _knobs = knobs


def bind_state(cls, tuple knobs):
    """Called once by the layer that defines ``KeepaliveState``: the type ``read_state`` makes."""
    global _state_type, _state_alloc
    cdef int k
    _bind_knobs(knobs)
    for k, name in enumerate(("enabled", "idle", "interval", "count")):
        _state_slot[k] = _slot(cls, name)
    _state_alloc = kaext_alloc_of(cls)
    _state_type = cls


def bind_policy(cls, tuple knobs):
    """Called once by the layer that defines ``Policy``: the type ``read_policy`` makes."""
    global _policy_type, _policy_alloc
    cdef int k
    _bind_knobs(knobs)
    for k, name in enumerate(("idle", "interval", "count", "user_timeout", "connect_timeout", "keepalive", "_plan")):
        _policy_slot[k] = _slot(cls, name)
    _policy_alloc = kaext_alloc_of(cls)
    _policy_type = cls


cdef inline object _value(const kaext_state *st, int k):
    """Knob ``k`` as read back: None, a count, or seconds.  None also for a value outside the
    knob's range: "unset" (illumos' 0 interval and count on a fresh socket, Windows' -1
    TCP_MAXRT) or more than kaext sets (``kaext._platform``)."""
    if _kind[k] == 0 or not (st.have & (1u << k)) or st.value[k] < _lo[k] or st.value[k] > _hi[k]:
        return None
    if _kind[k] == 1:
        return st.value[k]
    if _kind[k] == 3:
        return float(_syn_seconds(st.value[k]))
    return st.value[k] / _per_second[k]


cdef inline long long _syn_seconds(int n):
    """kaext._platform.syn_seconds: when Linux gives a connect with TCP_SYNCNT n up (s)."""
    if n <= 6:
        return (2LL << n) - 1
    return 127 + (n - 6) * 120LL


def read_state(object sock):
    """``KeepaliveState(enabled, idle, interval, count)`` of ``sock``: one read of four options."""
    cdef kaext_state st
    cdef int step = 0, err
    cdef kaext_sock fd
    _fd(sock, &fd)
    if _state_type is None:
        raise RuntimeError("kaext._kaext.read_state before bind_state")
    err = kaext_read_some(fd, _WANT_STATE, _mech, &st, &step)
    if err:
        _fail(err, step, None, fd)
    state = kaext_alloc(_state_alloc, _state_type)
    kaext_slot_set(state, _state_slot[0], st.keepalive != 0)
    kaext_slot_set(state, _state_slot[1], _value(&st, KAEXT_IDLE))
    kaext_slot_set(state, _state_slot[2], _value(&st, KAEXT_INTERVAL))
    kaext_slot_set(state, _state_slot[3], _value(&st, KAEXT_COUNT))
    return state


def read_policy(cls, object sock):
    """``Policy.from_socket``: the policy (of type ``cls``) that reproduces ``sock``'s keepalive
    and user timeout (see ``kaext.Policy.from_socket``).

    SO_KEEPALIVE and every knob that reads back, one getsockopt each; SO_KEEPALIVE off
    gives ``keepalive=False`` (the knobs are not carried), no user timeout gives
    ``user_timeout=0.0``; a knob that does not read back, or reads back outside the
    policy's range ("unset": illumos' 0, Windows' -1), is None: the policy leaves it.
    """
    cdef kaext_state st
    cdef int step = 0, err, k
    cdef unsigned mask = 0
    cdef kaext_sock fd
    cdef Plan plan
    _fd(sock, &fd)
    if _policy_type is None:
        raise RuntimeError("kaext._kaext.read_policy before bind_policy")
    err = kaext_read_some(fd, KAEXT_WANT_ALL, _mech, &st, &step)
    if err:
        _fail(err, step, None, fd)
    if not st.keepalive:  # keepalive off: the knobs have no effect and are not carried
        st.have &= ~((1u << KAEXT_IDLE) | (1u << KAEXT_INTERVAL) | (1u << KAEXT_COUNT))
    for k in range(KAEXT_NKNOBS):
        if _kind[k] and st.have & (1u << k) and _lo[k] <= st.value[k] <= _hi[k]:
            mask |= 1u << k
        else:
            st.have &= ~(1u << k)
            st.value[k] = 0
    if cls is _policy_type:
        policy = kaext_alloc(_policy_alloc, cls)
    elif isinstance(cls, type) and issubclass(cls, _policy_type):
        policy = cls.__new__(cls)
    else:
        raise TypeError(f"{cls!r} is not a subclass of {_policy_type.__name__}")
    kaext_slot_set(policy, _policy_slot[0], _value(&st, KAEXT_IDLE))
    kaext_slot_set(policy, _policy_slot[1], _value(&st, KAEXT_INTERVAL))
    kaext_slot_set(policy, _policy_slot[2], _value(&st, KAEXT_COUNT))
    kaext_slot_set(policy, _policy_slot[3], _value(&st, KAEXT_USER_TIMEOUT))
    kaext_slot_set(policy, _policy_slot[4], _value(&st, KAEXT_CONNECT_TIMEOUT))
    kaext_slot_set(policy, _policy_slot[5], st.keepalive != 0)
    plan = Plan.__new__(Plan, mask, st.value[KAEXT_IDLE], st.value[KAEXT_INTERVAL], st.value[KAEXT_COUNT],
                        st.value[KAEXT_USER_TIMEOUT], 1 if st.keepalive else 0, st.value[KAEXT_CONNECT_TIMEOUT])
    kaext_slot_set(policy, _policy_slot[6], plan)
    return policy


include "_kaext_proc.pxi"
include "_kaext_bpf.pxi"
include "_kaext_watch.pxi"
