# kaext.enforce: the BPF programs (kaext_bpf.h), Linux only, ENOSYS elsewhere; included by
# _kaext.pyx.  The pure-Python peer: src/kaext/_pure_bpf.py.

from libc.errno cimport ENOSPC

cdef extern from "kaext_bpf.h" nogil:
    int KAEXT_BPF_SOCK_OPS, KAEXT_BPF_SETSOCKOPT, KAEXT_BPF_NOPTIONS, KAEXT_BPF_READ_KEEPALIVE
    int KAEXT_BPF_KEEPALIVE, KAEXT_BPF_IDLE, KAEXT_BPF_INTERVAL, KAEXT_BPF_COUNT, KAEXT_BPF_USER_TIMEOUT
    int KAEXT_BPF_CONNECT_TIMEOUT
    unsigned KAEXT_BPF_RESPECT_EXISTING, KAEXT_BPF_FORCE, KAEXT_BPF_CLAIM
    int KAEXT_BPF_VALUE_SIZE, KAEXT_BPF_MAP_ENTRIES, KAEXT_BPF_CLAIM_AT, KAEXT_BPF_TAG_SIZE
    int KAEXT_BPF_FUNC_SETSOCKOPT_ID "KAEXT_BPF_FUNC_setsockopt"
    int KAEXT_BPF_FUNC_GETSOCKOPT_ID "KAEXT_BPF_FUNC_getsockopt"
    ctypedef unsigned int uint32_t
    ctypedef int int32_t
    ctypedef unsigned long long uint64_t
    ctypedef unsigned char uint8_t
    ctypedef struct kaext_bpf_prog_data:
        uint32_t id
        uint8_t tag[8]
        char name[16]
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
    int kaext_bpf_load(int kind, int map_fd, char *log, unsigned log_size, int strict)
    int kaext_bpf_map_create()
    int kaext_bpf_config_write(int map_fd, const kaext_bpf_config *c)
    int kaext_bpf_config_read(int map_fd, kaext_bpf_config *c)
    int kaext_bpf_counters_read(int map_fd, kaext_bpf_counters *c)
    int kaext_bpf_pin(int fd, const char *path)
    int kaext_bpf_obj_get(const char *path)
    int kaext_bpf_attach(int cgroup_fd, int prog_fd, int kind, int detach)
    int kaext_bpf_mount(const char *path)
    int kaext_bpf_prog_query(int cgroup_fd, int kind, int effective, uint32_t *ids, uint32_t *cnt)
    int kaext_bpf_fd_by_id(int map, uint32_t id)
    int kaext_bpf_prog_info(int prog_fd, kaext_bpf_prog_data *info, uint32_t *map_id)
    int kaext_bpf_map_id(int map_fd, uint32_t *id)

BPF_SOCK_OPS = KAEXT_BPF_SOCK_OPS
BPF_SETSOCKOPT = KAEXT_BPF_SETSOCKOPT
# The map's layout, its flags and the helpers the programs call, as kaext_bpf.h states them
# (kaext._pure_bpf states them again for Python; a test holds the two equal).
BPF_FACTS = {
    "KEEPALIVE": KAEXT_BPF_KEEPALIVE,
    "IDLE": KAEXT_BPF_IDLE,
    "INTERVAL": KAEXT_BPF_INTERVAL,
    "COUNT": KAEXT_BPF_COUNT,
    "USER_TIMEOUT": KAEXT_BPF_USER_TIMEOUT,
    "CONNECT_TIMEOUT": KAEXT_BPF_CONNECT_TIMEOUT,
    "NOPTIONS": KAEXT_BPF_NOPTIONS,
    "READ_KEEPALIVE": KAEXT_BPF_READ_KEEPALIVE,
    "RESPECT_EXISTING": KAEXT_BPF_RESPECT_EXISTING,
    "FORCE": KAEXT_BPF_FORCE,
    "CLAIM": KAEXT_BPF_CLAIM,
    "CLAIM_AT": KAEXT_BPF_CLAIM_AT,
    "VALUE_SIZE": KAEXT_BPF_VALUE_SIZE,
    "MAP_ENTRIES": KAEXT_BPF_MAP_ENTRIES,
    "FUNC_SETSOCKOPT": KAEXT_BPF_FUNC_SETSOCKOPT_ID,
    "FUNC_GETSOCKOPT": KAEXT_BPF_FUNC_GETSOCKOPT_ID,
}


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


def bpf_load(int kind, int map_fd, bint strict=False):
    """Assemble and load program ``kind`` (BPF_SOCK_OPS or BPF_SETSOCKOPT) over the map
    (``strict``: with the alignment checks of kernels without efficient unaligned access).

    Returns its descriptor; OSError when the kernel refuses it, the verifier's log as its filename.
    """
    cdef char *log = <char *>malloc(65536)
    cdef int fd
    if log == NULL:
        raise MemoryError()
    try:
        fd = kaext_bpf_load(kind, map_fd, log, 65536, strict)
        if fd < 0:
            # the verifier's log goes along as the exception's filename (kaext.enforce reads it)
            e = c_errno
            import os
            # the log is a C string (kaext_bpf_load ends the buffer with a NUL): up to its first NUL
            text = (<bytes>log).decode("utf-8", "replace").strip()
            raise OSError(e, os.strerror(e), text or "bpf(BPF_PROG_LOAD)")
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


def bpf_prog_query(int cgroup_fd, int kind, bint effective=False):
    """Ids of the programs of ``kind`` attached to the cgroup (``effective``: those that run
    for its sockets, in their order: its own, then its ancestors')."""
    cdef uint32_t cnt = 64
    cdef uint32_t ids[64]
    if kaext_bpf_prog_query(cgroup_fd, kind, effective, ids, &cnt) == 0:
        return [ids[i] for i in range(cnt)]
    if c_errno != ENOSPC:
        raise _bpf_error("bpf(BPF_PROG_QUERY)")
    return bpf_prog_query_big(cgroup_fd, kind, effective, cnt)


cdef bpf_prog_query_big(int cgroup_fd, int kind, bint effective, uint32_t cnt):
    cdef uint32_t *ids = <uint32_t *>malloc(sizeof(uint32_t) * (cnt + 16))
    cdef uint32_t room
    if ids == NULL:
        raise MemoryError()
    try:
        room = cnt + 16
        if kaext_bpf_prog_query(cgroup_fd, kind, effective, ids, &room) < 0:
            raise _bpf_error("bpf(BPF_PROG_QUERY)")
        return [ids[i] for i in range(room)]
    finally:
        free(ids)


def bpf_fd_by_id(bint map, unsigned int obj_id):
    """A descriptor for the program (or, ``map``: the map) with id ``obj_id``."""
    cdef int fd = kaext_bpf_fd_by_id(map, obj_id)
    if fd < 0:
        raise _bpf_error("bpf(BPF_MAP_GET_FD_BY_ID)" if map else "bpf(BPF_PROG_GET_FD_BY_ID)")
    return fd


def bpf_prog_info(int prog_fd):
    """``(id, tag, name, map_id)`` of a program: tag in hex, the id of its first map (0: none)."""
    cdef kaext_bpf_prog_data info
    cdef uint32_t map_id = 0
    if kaext_bpf_prog_info(prog_fd, &info, &map_id) < 0:
        raise _bpf_error("bpf(BPF_OBJ_GET_INFO_BY_FD)")
    tag = bytes([info.tag[i] for i in range(KAEXT_BPF_TAG_SIZE)]).hex()
    return info.id, tag, (<bytes>info.name[:16]).split(b"\0", 1)[0].decode("ascii", "replace"), map_id


def bpf_map_id(int map_fd):
    """The id of a map."""
    cdef uint32_t map_id = 0
    if kaext_bpf_map_id(map_fd, &map_id) < 0:
        raise _bpf_error("bpf(BPF_OBJ_GET_INFO_BY_FD)")
    return map_id
