# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: freethreading_compatible=True
"""kaext._kaext -- the compiled implementation.

Calls setsockopt/getsockopt (and WSAIoctl on Windows) through the C shim
``kaext_shim.h``, which takes every constant from the platform's headers.
The Python layer (``kaext._api``) validates and converts values; this module
only talks to the kernel.  ``kaext._pure`` implements the same functions in
Python.
"""

from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.object cimport PyTypeObject

# Slots of the API's value types (``__slots__`` member descriptors), set from C the way
# ``object.__setattr__`` would, without looking the name up on every call.
cdef extern from "structmember.h":
    ctypedef struct PyMemberDef:
        pass
    int PyMember_SetOne(char *addr, PyMemberDef *m, object v) except -1

cdef extern from "Python.h":
    ctypedef struct PyMemberDescrObject:
        PyMemberDef *d_member
    PyTypeObject PyMemberDescr_Type
    bint PyObject_TypeCheck(object o, PyTypeObject *t)

cdef extern from *:
    """
    /* A new, empty instance of a class that takes no arguments to make (object.__new__). */
    static PyObject *kaext_alloc(PyObject *cls)
    {
        PyTypeObject *t = (PyTypeObject *)cls;
        return t->tp_alloc(t, 0);
    }
    """
    object kaext_alloc(object cls)

cdef extern from "kaext_shim.h" nogil:
    ctypedef long long kaext_sock
    int KAEXT_NKNOBS
    int KAEXT_KNOB_LEVEL
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
        unsigned set
        int value[4]
        int keepalive
    ctypedef struct kaext_state:
        unsigned have
        int value[4]
        int keepalive
    int kaext_apply(kaext_sock fd, const kaext_plan *plan, int *step)
    int kaext_read_some(kaext_sock fd, unsigned want, kaext_state *st, int *step)
    int kaext_knob_supported(int k)
    int kaext_knob_mechanism(int k)
    const char *kaext_knob_unit(int k)
    int KAEXT_MECH_NONE
    int KAEXT_MECH_SETSOCKOPT
    int KAEXT_MECH_SIO
    int KAEXT_KEEPALIVE
    int KAEXT_PROBE
    unsigned long long KAEXT_SOCK_MAX

import sys

IMPLEMENTATION = "c"

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
KNOB_OPTIONS = tuple(
    (kaext_knob_name[k].decode(), KAEXT_KNOB_LEVEL, kaext_knob_opt[k]) if kaext_knob_have[k] else None
    for k in range(KAEXT_NKNOBS)
)
FD_MAX = KAEXT_SOCK_MAX

# Probe every knob once now, so the shim's mechanism cache is filled before any
# other thread can use the module (no racing first writes on free-threaded builds).
for _i in range(KAEXT_NKNOBS):
    kaext_knob_mechanism(_i)


def knob_supported(int k):
    """Does the running kernel accept knob ``k``'s socket option (probed on a throwaway socket)?"""
    return kaext_knob_supported(k) == 1


def mechanism(int k):
    """How knob ``k`` is set on the running system (``MECH_*``), probed once per process.

    ``MECH_SETSOCKOPT``: setsockopt(IPPROTO_TCP, option); ``MECH_SIO``: Windows without
    TCP_KEEPIDLE (before 10 version 1709, wine): WSAIoctl(SIO_KEEPALIVE_VALS), in ms,
    write-only; ``MECH_NONE``: not available (no option, or the kernel refused it).
    """
    return kaext_knob_mechanism(k)


def knob_unit(int k):
    """The unit the shim takes knob ``k`` in under its mechanism: "s", "ms", "probes" or ""."""
    return kaext_knob_unit(k).decode()


# socket.socket, once the socket module is loaded: its fileno() always returns an int
# (-1 when closed), so the checks for arbitrary fileno() implementations can be skipped.
cdef object _socket_type = None
cdef object _socket_fileno = None  # socket.socket.fileno, called unbound


cdef long long _fd(object sock) except? -1:
    global _socket_type, _socket_fileno
    cdef object fd
    if type(sock) is _socket_type and _socket_fileno is not None:
        fd = _socket_fileno(sock)  # the common case: one call, no attribute lookup
    elif isinstance(sock, int):
        if isinstance(sock, bool):
            from kaext._errors import fd_type_error
            raise fd_type_error(sock)
        fd = sock
    else:
        if _socket_type is None:
            cls = getattr(sys.modules.get("socket"), "socket", None)
            _socket_fileno = getattr(cls, "fileno", None)  # before the type: the fast path checks both
            _socket_type = cls
        try:
            fileno = sock.fileno
        except AttributeError:
            from kaext._errors import fd_type_error
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
            raise TypeError(
                f"{type(sock).__name__}.fileno() returned {type(fd).__name__}, not int")
    # fd is an int here: compare in C (no Python int made for the bound)
    cdef int overflow = 0
    cdef long long value = PyLong_AsLongLongAndOverflow(fd, &overflow)
    if overflow or value < 0 or <unsigned long long>value > KAEXT_SOCK_MAX:
        from kaext._errors import bad_fd_error
        raise bad_fd_error(fd)
    return value


cdef object _fail(int err, int step, object plan):
    from kaext._errors import socket_error
    from kaext._platform import KNOBS, spec_for
    cdef object value = None
    spec = None
    name = ""
    if step < KAEXT_NKNOBS:
        name = kaext_knob_name[step].decode()
        spec = spec_for(KNOBS[step], name, kaext_knob_mechanism(step))
        if spec is not None and spec.ioctl:
            name = spec.option
    if plan is not None:
        value = plan[step + 1] if step < KAEXT_NKNOBS else (plan[5] if step == KAEXT_KEEPALIVE else None)
    raise socket_error(err, step, name, value, spec)


cdef inline object _apply(object sock, tuple plan):
    cdef kaext_plan p
    cdef int step = 0, err
    cdef kaext_sock fd = <kaext_sock>_fd(sock)
    p.set = plan[0]
    p.value[0] = plan[1]
    p.value[1] = plan[2]
    p.value[2] = plan[3]
    p.value[3] = plan[4]
    p.keepalive = plan[5]
    err = kaext_apply(fd, &p, &step)
    if err:
        _fail(err, step, plan)


def apply(object sock, tuple plan):
    """Write a plan ``(set_mask, idle, interval, count, user_timeout, keepalive)``.

    Values are in each knob's OS unit and already range-checked; ``keepalive``
    is -1 (leave), 0 or 1.  Raises OSError; on error the socket is unchanged.
    """
    _apply(sock, plan)


def apply_policy(self, sock):
    """Apply this policy to ``sock``, all or nothing (see :class:`kaext.Policy`).

    Bound as ``Policy.apply``: one C call per policy, the hot path.
    """
    _apply(sock, self._plan)


def read(object sock, unsigned int want=0x1F):
    """Read ``(keepalive, idle, interval, count, user_timeout)`` in OS units.

    ``want`` picks what to read (bit k: knob k, bit 4: SO_KEEPALIVE); what was not
    asked for or cannot be read back is None (keepalive: 0).
    """
    cdef kaext_state st
    cdef int step = 0, err
    cdef kaext_sock fd = <kaext_sock>_fd(sock)
    err = kaext_read_some(fd, want, &st, &step)
    if err:
        _fail(err, step, None)
    return (
        st.keepalive,
        st.value[0] if st.have & 1 else None,
        st.value[1] if st.have & 2 else None,
        st.value[2] if st.have & 4 else None,
        st.value[3] if st.have & 8 else None,
    )


# --------------------------------------------------------------------------------------
# Read-back straight into the public value types
# --------------------------------------------------------------------------------------
#
# The layers above hand their types over once, at import (bind_state, bind_policy), with
# the knobs capabilities() lists: per knob None (not listed: reads back as None) or its
# kaext.Knob (unit, range, option).  A read then makes the instance here, in one call:
# no Python-level work per knob.

cdef object _state_type = None
cdef PyMemberDef *_state_slot[4]      # enabled, idle, interval, count
cdef object _policy_type = None
cdef PyMemberDef *_policy_slot[6]     # idle, interval, count, user_timeout, keepalive, _plan
cdef int _kind[4]                     # 0: reads back as None, 1: a count (int), 2: seconds (float)
cdef double _per_second[4]
cdef long long _lo[4]
cdef long long _hi[4]
cdef tuple _knobs = ()                # the Knob objects, for the range error
cdef unsigned _WANT_STATE = (1u << KAEXT_KEEPALIVE) | 7u
cdef unsigned _WANT_ALL = (1u << KAEXT_KEEPALIVE) | 15u


cdef PyMemberDef *_slot(object cls, str name) except NULL:
    descriptor = cls.__dict__.get(name)
    if descriptor is None or not PyObject_TypeCheck(descriptor, &PyMemberDescr_Type):
        raise TypeError(f"{cls.__name__}.{name} is not a __slots__ field")
    return (<PyMemberDescrObject *>descriptor).d_member


cdef _bind_knobs(tuple knobs):
    global _knobs
    cdef int k
    for k in range(KAEXT_NKNOBS):
        knob = knobs[k]
        if knob is None:
            _kind[k] = 0
            continue
        _kind[k] = 1 if knob.unit == "probes" else 2
        _per_second[k] = 1000.0 if knob.unit == "ms" else 1.0
        _lo[k] = knob.min
        _hi[k] = knob.max
    _knobs = knobs


cdef object _range_fail(int k, int value):
    from kaext._errors import range_error
    from kaext._platform import KNOBS
    seconds = value if _kind[k] == 1 else value / _per_second[k]
    raise range_error(KNOBS[k], seconds, _knobs[k], "as read back from the socket")


def bind_state(cls, tuple knobs):
    """Called once by the layer that defines ``KeepaliveState``: the type ``read_state`` makes."""
    global _state_type
    cdef int k
    _bind_knobs(knobs)
    for k, name in enumerate(("enabled", "idle", "interval", "count")):
        _state_slot[k] = _slot(cls, name)
    _state_type = cls


def bind_policy(cls, tuple knobs):
    """Called once by the layer that defines ``Policy``: the type ``read_policy`` makes."""
    global _policy_type
    cdef int k
    _bind_knobs(knobs)
    for k, name in enumerate(("idle", "interval", "count", "user_timeout", "keepalive", "_plan")):
        _policy_slot[k] = _slot(cls, name)
    _policy_type = cls


cdef inline object _value(const kaext_state *st, int k):
    """Knob ``k`` as read back: None, a count, or seconds."""
    if _kind[k] == 0 or not (st.have & (1u << k)):
        return None
    if _kind[k] == 1:
        return st.value[k]
    return st.value[k] / _per_second[k]


def read_state(object sock):
    """``KeepaliveState(enabled, idle, interval, count)`` of ``sock``: one read of four options."""
    cdef kaext_state st
    cdef int step = 0, err
    cdef kaext_sock fd = <kaext_sock>_fd(sock)
    if _state_type is None:
        raise RuntimeError("kaext._kaext.read_state before bind_state")
    err = kaext_read_some(fd, _WANT_STATE, &st, &step)
    if err:
        _fail(err, step, None)
    state = kaext_alloc(_state_type)
    cdef char *fields = <char *><void *>state
    PyMember_SetOne(fields, _state_slot[0], st.keepalive != 0)
    PyMember_SetOne(fields, _state_slot[1], _value(&st, 0))
    PyMember_SetOne(fields, _state_slot[2], _value(&st, 1))
    PyMember_SetOne(fields, _state_slot[3], _value(&st, 2))
    return state


def read_policy(cls, object sock):
    """The policy (of type ``cls``) that reproduces ``sock``'s keepalive and user timeout.

    Bound as ``Policy.from_socket``; see there.  SO_KEEPALIVE and every knob that
    reads back, one getsockopt each; SO_KEEPALIVE off gives ``keepalive=False`` (the
    knobs are not carried), no user timeout gives ``user_timeout=0.0``; a knob that
    does not read back is None.  ValueError for a value outside the policy's range.
    """
    cdef kaext_state st
    cdef int step = 0, err, k
    cdef unsigned mask = 0
    cdef kaext_sock fd = <kaext_sock>_fd(sock)
    if _policy_type is None:
        raise RuntimeError("kaext._kaext.read_policy before bind_policy")
    err = kaext_read_some(fd, _WANT_ALL, &st, &step)
    if err:
        _fail(err, step, None)
    if not st.keepalive:  # keepalive off: the knobs have no effect and are not carried
        st.have &= ~7u
    for k in range(KAEXT_NKNOBS):
        if _kind[k] and st.have & (1u << k):
            if st.value[k] < _lo[k] or st.value[k] > _hi[k]:
                _range_fail(k, st.value[k])
            mask |= 1u << k
        else:
            st.have &= ~(1u << k)
            st.value[k] = 0
    if cls is _policy_type:
        policy = kaext_alloc(cls)
    elif isinstance(cls, type) and issubclass(cls, _policy_type):
        policy = cls.__new__(cls)
    else:
        raise TypeError(f"{cls!r} is not a subclass of {_policy_type.__name__}")
    cdef char *fields = <char *><void *>policy
    PyMember_SetOne(fields, _policy_slot[0], _value(&st, 0))
    PyMember_SetOne(fields, _policy_slot[1], _value(&st, 1))
    PyMember_SetOne(fields, _policy_slot[2], _value(&st, 2))
    PyMember_SetOne(fields, _policy_slot[3], _value(&st, 3))
    PyMember_SetOne(fields, _policy_slot[4], st.keepalive != 0)
    PyMember_SetOne(fields, _policy_slot[5],
                    (mask, st.value[0], st.value[1], st.value[2], st.value[3], 1 if st.keepalive else 0))
    return policy
