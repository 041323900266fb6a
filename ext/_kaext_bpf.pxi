# kaext.enforce: the BPF programs (kaext_bpf.h), Linux only, ENOSYS elsewhere; included by
# _kaext.pyx.  The pure-Python peer: src/kaext/_pure_bpf.py.

cdef extern from "kaext_bpf.h" nogil:
    int KAEXT_BPF_SOCK_OPS, KAEXT_BPF_SETSOCKOPT, KAEXT_BPF_NOPTIONS
    ctypedef unsigned int uint32_t
    ctypedef int int32_t
    ctypedef unsigned long long uint64_t
    ctypedef struct kaext_bpf_config:
        uint32_t mask
        uint32_t flags
        uint32_t value[6]
        uint64_t cgroup_id
    ctypedef struct kaext_bpf_counters:
        uint64_t applied
        uint64_t skipped
        uint64_t failed
        int32_t last_errno
        uint32_t last_option
    int kaext_bpf_load(int kind, int map_fd, char *log, unsigned log_size)
    int kaext_bpf_map_create()
    int kaext_bpf_config_write(int map_fd, const kaext_bpf_config *c)
    int kaext_bpf_config_read(int map_fd, kaext_bpf_config *c)
    int kaext_bpf_counters_read(int map_fd, kaext_bpf_counters *c)
    int kaext_bpf_pin(int fd, const char *path)
    int kaext_bpf_obj_get(const char *path)
    int kaext_bpf_attach(int cgroup_fd, int prog_fd, int kind, int detach)
    int kaext_bpf_mount(const char *path)

BPF_SOCK_OPS = KAEXT_BPF_SOCK_OPS
BPF_SETSOCKOPT = KAEXT_BPF_SETSOCKOPT


cdef _bpf_error(str what):
    # OSError(errno, strerror, the call): an errno subclass (PermissionError, FileNotFoundError...)
    cdef int e = c_errno
    import os
    return OSError(e, os.strerror(e), what)


def bpf_map_create():
    """A new policy/counters map (BPF_MAP_TYPE_ARRAY, two entries): its descriptor."""
    cdef int fd = kaext_bpf_map_create()
    if fd < 0:
        raise _bpf_error("bpf(BPF_MAP_CREATE)")
    return fd


def bpf_config_write(int map_fd, unsigned int mask, unsigned int flags, tuple values, unsigned long long cgroup_id):
    """Write the policy (entry 0): option mask, flags, the six values in kernel units, the cgroup's id."""
    cdef kaext_bpf_config c
    c.mask = mask
    c.flags = flags
    c.value[0], c.value[1], c.value[2], c.value[3], c.value[4], c.value[5] = values
    c.cgroup_id = cgroup_id
    if kaext_bpf_config_write(map_fd, &c) < 0:
        raise _bpf_error("bpf(BPF_MAP_UPDATE_ELEM)")


def bpf_config_read(int map_fd):
    """The policy entry: ``(mask, flags, values, cgroup_id)``."""
    cdef kaext_bpf_config c
    if kaext_bpf_config_read(map_fd, &c) < 0:
        raise _bpf_error("bpf(BPF_MAP_LOOKUP_ELEM)")
    values = (c.value[0], c.value[1], c.value[2], c.value[3], c.value[4], c.value[5])
    return c.mask, c.flags, values, c.cgroup_id


def bpf_counters_read(int map_fd):
    """The counters entry: ``(applied, skipped, failed, last_errno, last_option)``."""
    cdef kaext_bpf_counters c
    if kaext_bpf_counters_read(map_fd, &c) < 0:
        raise _bpf_error("bpf(BPF_MAP_LOOKUP_ELEM)")
    return c.applied, c.skipped, c.failed, -c.last_errno, c.last_option


def bpf_load(int kind, int map_fd):
    """Assemble and load program ``kind`` (BPF_SOCK_OPS or BPF_SETSOCKOPT) over the map.

    Returns its descriptor; OSError when the kernel refuses it, the verifier's log as its filename.
    """
    cdef char *log = <char *>malloc(65536)
    cdef int fd
    if log == NULL:
        raise MemoryError()
    try:
        fd = kaext_bpf_load(kind, map_fd, log, 65536)
        if fd < 0:
            # the verifier's log goes along as the exception's filename (kaext.enforce reads it)
            e = c_errno
            import os
            raise OSError(e, os.strerror(e), log[:65535].decode("utf-8", "replace").strip() or "bpf(BPF_PROG_LOAD)")
        return fd
    finally:
        free(log)


def bpf_pin(int fd, str path):
    """Pin BPF object ``fd`` at ``path`` (on a BPF filesystem)."""
    if kaext_bpf_pin(fd, path.encode()) < 0:
        raise _bpf_error("bpf(BPF_OBJ_PIN)")


def bpf_obj_get(str path):
    """A descriptor for the BPF object pinned at ``path``."""
    cdef int fd = kaext_bpf_obj_get(path.encode())
    if fd < 0:
        raise _bpf_error("bpf(BPF_OBJ_GET)")
    return fd


def bpf_attach(int cgroup_fd, int prog_fd, int kind):
    """Attach program ``prog_fd`` (of ``kind``) to the cgroup, next to any others (BPF_F_ALLOW_MULTI)."""
    if kaext_bpf_attach(cgroup_fd, prog_fd, kind, 0) < 0:
        raise _bpf_error("bpf(BPF_PROG_ATTACH)")


def bpf_detach(int cgroup_fd, int prog_fd, int kind):
    """Detach program ``prog_fd`` (of ``kind``) from the cgroup."""
    if kaext_bpf_attach(cgroup_fd, prog_fd, kind, 1) < 0:
        raise _bpf_error("bpf(BPF_PROG_DETACH)")


def bpf_mount(str path):
    """Mount a BPF filesystem on ``path``."""
    if kaext_bpf_mount(path.encode()) < 0:
        raise _bpf_error("mount(bpf)")
