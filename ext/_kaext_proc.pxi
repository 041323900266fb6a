# Running processes (kaext.connections, python -m kaext.inspect): ext/kaext_proc.h, Linux only;
# included by _kaext.pyx.  The pure-Python peer: src/kaext/_pure_proc.py.

cdef extern from "kaext_proc.h" nogil:
    int KAEXT_HAVE_PROC
    ctypedef struct kaext_proc_opts:
        int err
        unsigned long long inode
        int keepalive
        int idle
        int interval
        int count
        int user_timeout
    int kaext_pidfd_open(int pid, unsigned flags)
    int kaext_pidfd_getfd(int pidfd, int fd)
    void kaext_proc_read(int pidfd, const int *fds, kaext_proc_opts *out, size_t n)
    ctypedef struct kaext_diag_msg:
        int err
        int ipv6
        int state
        int timer
        int retrans
        unsigned sport
        unsigned dport
        unsigned char src[16]
        unsigned char dst[16]
        unsigned expires
        unsigned long long inode
    int KAEXT_DIAG_SOCKET, KAEXT_DIAG_END, KAEXT_DIAG_DONE, KAEXT_DIAG_ERROR, KAEXT_DIAG_BAD
    int KAEXT_ADDRSTRLEN
    int kaext_diag_next(const unsigned char *buf, size_t n, size_t *off, kaext_diag_msg *m)
    const char *kaext_diag_ntop(int ipv6, const unsigned char *addr, char *out)


def pidfd_open(int pid, unsigned flags=0):
    """A pidfd for process ``pid`` (Linux 5.3+; OSError ESRCH when there is none, ENOSYS elsewhere).

    ``flags``: 0, or PIDFD_THREAD (``kaext._platform.PIDFD_THREAD``, Linux 6.9+) for a
    pidfd of the thread ``pid``.
    """
    cdef int fd = kaext_pidfd_open(pid, flags)
    if fd < 0:
        import os
        raise OSError(c_errno, os.strerror(c_errno))
    return fd


def pidfd_getfd(int pidfd, int fd):
    """Duplicate descriptor ``fd`` of the process behind ``pidfd`` into this one (Linux 5.6+).

    The new descriptor is close-on-exec.  OSError EPERM without the right to ptrace
    that process, EBADF when it has no such descriptor, ENOSYS elsewhere.
    """
    cdef int new = kaext_pidfd_getfd(pidfd, fd)
    if new < 0:
        import os
        raise OSError(c_errno, os.strerror(c_errno))
    return new


def proc_read(int pidfd, fds):
    """Read inode, keepalive and user timeout of many descriptors in one call, in kernel units.

    ``fds``: descriptors of the process behind ``pidfd`` (each duplicated, read and
    closed), or of this process when ``pidfd`` is -1.  Returns one ``(err, inode,
    keepalive, idle, interval, count, user_timeout)`` per descriptor; ``err`` is 0 or
    an errno (ENOTSOCK: not a socket; EOPNOTSUPP/ENOPROTOOPT: not TCP; EPERM: no right
    to ptrace), ``inode`` 0 for a non-socket, ``user_timeout`` None where unreadable.
    """
    cdef Py_ssize_t n = len(fds), i
    if n == 0:
        return []
    cdef int *cfds = <int *>malloc(n * sizeof(int))
    cdef kaext_proc_opts *out = <kaext_proc_opts *>malloc(n * sizeof(kaext_proc_opts))
    cdef list result
    try:
        if cfds == NULL or out == NULL:
            raise MemoryError()
        for i in range(n):
            cfds[i] = fds[i]
        with nogil:
            kaext_proc_read(pidfd, cfds, out, <size_t>n)
        result = [None] * n
        for i in range(n):
            result[i] = (
                out[i].err, out[i].inode, out[i].keepalive, out[i].idle, out[i].interval, out[i].count,
                out[i].user_timeout if out[i].user_timeout >= 0 else None,
            )
        return result
    finally:
        free(cfds)
        free(out)


def diag_parse(bytearray buf, Py_ssize_t n, set wanted, dict table, tuple states, tuple timers,
               int keepalive_timer):
    """Parse one read (``buf[:n]``) of a sock_diag dump of TCP sockets into ``table``.

    Adds ``{inode: (family, state, (host, port), (host, port), timer, timer_left,
    probes)}`` for the ``wanted`` inodes, as ``kaext._pure_proc.diag_parse``
    does in Python (``states`` and ``timers`` name the kernel's numbers; probes only
    while the timer is ``keepalive_timer``).  Returns True at the end of the dump.
    """
    cdef size_t off = 0
    cdef kaext_diag_msg m
    cdef int r
    cdef char local[64]
    cdef char remote[64]
    cdef Py_ssize_t nstates = len(states), ntimers = len(timers)
    # the bytearray's own memory, not a typed memoryview: Cython's memoryview support
    # would add about 60 kB to the extension
    cdef const unsigned char *data = <const unsigned char *>PyByteArray_AsString(buf)
    if n < 0 or n > PyByteArray_Size(buf):
        raise ValueError(f"diag_parse: n={n} outside the buffer")
    if n == 0:
        return False
    while True:
        r = kaext_diag_next(data, <size_t>n, &off, &m)
        if r == KAEXT_DIAG_END:
            return False
        if r == KAEXT_DIAG_DONE:
            return True
        if r == KAEXT_DIAG_ERROR:
            import os
            raise OSError(m.err, f"sock_diag: {os.strerror(m.err)}")
        if r != KAEXT_DIAG_SOCKET:
            import errno
            raise OSError(errno.EPROTO, "sock_diag: malformed netlink message")
        inode = m.inode
        if inode not in wanted:
            continue
        kaext_diag_ntop(m.ipv6, m.src, local)
        kaext_diag_ntop(m.ipv6, m.dst, remote)
        table[inode] = (
            "IPv6" if m.ipv6 else "IPv4",
            states[m.state] if m.state < nstates else str(m.state),
            (local.decode("ascii"), m.sport),
            (remote.decode("ascii"), m.dport),
            timers[m.timer] if m.timer < ntimers else str(m.timer),
            None if m.timer == 0 else m.expires / 1000.0,
            m.retrans if m.timer == keepalive_timer else None,
        )
