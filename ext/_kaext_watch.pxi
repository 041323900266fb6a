# kaext.watch: its bpf(2) calls (kaext_watch.h), Linux only, ENOSYS elsewhere; included by
# _kaext.pyx.  The programs themselves are assembled in Python (src/kaext/watch.py).  The
# pure-Python peer: src/kaext/_pure_bpf.py.

cdef extern from "kaext_watch.h" nogil:
    int kaext_watch_map_create(unsigned int type, unsigned int key_size, unsigned int value_size,
                               unsigned int max_entries, const char *name)
    int kaext_watch_prog_load(unsigned int type, const void *insns, unsigned int n, const char *name,
                              char *log, unsigned int log_size)
    int kaext_watch_raw_tp_open(const char *name, int prog_fd)
    int kaext_watch_map_lookup(int map_fd, const void *key, void *value)


def bpf_map_new(unsigned int map_type, unsigned int key_size, unsigned int value_size, unsigned int max_entries,
                str name):
    """A new BPF map of any type: its descriptor."""
    cdef int fd = kaext_watch_map_create(map_type, key_size, value_size, max_entries, name.encode()[:15])
    if fd < 0:
        raise _bpf_error("bpf(BPF_MAP_CREATE)")
    return fd


def bpf_prog_new(unsigned int prog_type, bytes insns, str name):
    """Load ``insns`` (8 bytes each) as a program of ``prog_type``: its descriptor.

    OSError when the kernel refuses it, the verifier's log as its filename.
    """
    cdef char *log = <char *>malloc(262144)
    cdef const char *code = insns
    cdef int fd
    if log == NULL:
        raise MemoryError()
    try:
        fd = kaext_watch_prog_load(prog_type, code, <unsigned int>(len(insns) // 8), name.encode()[:15], log, 262144)
        if fd < 0:
            e = c_errno
            import os
            raise OSError(e, os.strerror(e), log[:262143].decode("utf-8", "replace").strip() or "bpf(BPF_PROG_LOAD)")
        return fd
    finally:
        free(log)


def bpf_raw_tracepoint_open(str name, int prog_fd):
    """Attach program ``prog_fd`` to raw tracepoint ``name``: the attachment's descriptor (closing it detaches)."""
    cdef int fd = kaext_watch_raw_tp_open(name.encode(), prog_fd)
    if fd < 0:
        raise _bpf_error("bpf(BPF_RAW_TRACEPOINT_OPEN)")
    return fd


def bpf_map_lookup(int map_fd, bytes key, unsigned int value_size):
    """The value of ``key`` in the map (``value_size`` bytes); OSError ENOENT when it has none."""
    cdef bytearray value = bytearray(value_size)
    cdef const char *k = key
    if kaext_watch_map_lookup(map_fd, k, PyByteArray_AsString(value)) < 0:
        raise _bpf_error("bpf(BPF_MAP_LOOKUP_ELEM)")
    return bytes(value)
