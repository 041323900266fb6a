/*
 * kaext_watch.h -- the bpf(2) calls of kaext.watch: maps of any type, programs given as
 * instructions (assembled in Python by kaext.watch, with field offsets from the running
 * kernel's BTF), raw tracepoint attachment and element lookup.
 *
 * Linux only; elsewhere every function fails with ENOSYS, so the extension builds
 * everywhere.  The attribute layouts are those of include/uapi/linux/bpf.h (a stable ABI:
 * fields are only ever appended).  A raw tracepoint stays attached while its descriptor is
 * open: nothing is pinned, so a watcher that dies (even by SIGKILL) leaves nothing behind.
 */
#ifndef KAEXT_WATCH_H
#define KAEXT_WATCH_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __linux__

#include <sys/syscall.h>
#include <unistd.h>

#define KAEXT_WATCH_MAP_CREATE 0
#define KAEXT_WATCH_MAP_LOOKUP_ELEM 1
#define KAEXT_WATCH_PROG_LOAD 5
#define KAEXT_WATCH_RAW_TRACEPOINT_OPEN 17

typedef union {
    struct {
        uint32_t map_type, key_size, value_size, max_entries, map_flags, inner_map_fd, numa_node;
        char map_name[16];
    } map;
    struct {
        uint32_t map_fd, pad;
        uint64_t key, value, flags;
    } elem;
    struct {
        uint32_t prog_type, insn_cnt;
        uint64_t insns, license;
        uint32_t log_level, log_size;
        uint64_t log_buf;
        uint32_t kern_version, prog_flags;
        char prog_name[16];
        uint32_t prog_ifindex, expected_attach_type;
    } load;
    struct {
        uint64_t name;
        uint32_t prog_fd, pad;
    } raw_tp;
    unsigned char bytes[128];
} kaext_watch_attr;

static long kaext_watch_sys(int cmd, kaext_watch_attr *attr)
{
    return syscall(__NR_bpf, cmd, attr, sizeof(*attr));
}

static int kaext_watch_map_create(uint32_t type, uint32_t key_size, uint32_t value_size, uint32_t max_entries,
                                  const char *name)
{
    kaext_watch_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.map.map_type = type;
    attr.map.key_size = key_size;
    attr.map.value_size = value_size;
    attr.map.max_entries = max_entries;
    strncpy(attr.map.map_name, name, sizeof(attr.map.map_name) - 1);
    return (int)kaext_watch_sys(KAEXT_WATCH_MAP_CREATE, &attr);
}

/* Load `n` instructions (8 bytes each) as a program of `type`: its descriptor, or -1 with
 * errno and the verifier's log in `log` (when one was given). */
static int kaext_watch_prog_load(uint32_t type, const void *insns, uint32_t n, const char *name, char *log,
                                 uint32_t log_size)
{
    kaext_watch_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.load.prog_type = type;
    attr.load.insn_cnt = n;
    attr.load.insns = (uint64_t)(uintptr_t)insns;
    attr.load.license = (uint64_t)(uintptr_t) "GPL";
    strncpy(attr.load.prog_name, name, sizeof(attr.load.prog_name) - 1);
    if (log != NULL && log_size > 0) {
        log[0] = 0;
        attr.load.log_level = 1;
        attr.load.log_size = log_size;
        attr.load.log_buf = (uint64_t)(uintptr_t)log;
    }
    int fd = (int)kaext_watch_sys(KAEXT_WATCH_PROG_LOAD, &attr);
    if (fd < 0 && errno == ENOSPC && log != NULL) {
        attr.load.log_level = 0;
        attr.load.log_size = 0;
        attr.load.log_buf = 0;
        fd = (int)kaext_watch_sys(KAEXT_WATCH_PROG_LOAD, &attr);
    }
    return fd;
}

static int kaext_watch_raw_tp_open(const char *name, int prog_fd)
{
    kaext_watch_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.raw_tp.name = (uint64_t)(uintptr_t)name;
    attr.raw_tp.prog_fd = (uint32_t)prog_fd;
    return (int)kaext_watch_sys(KAEXT_WATCH_RAW_TRACEPOINT_OPEN, &attr);
}

static int kaext_watch_map_lookup(int map_fd, const void *key, void *value)
{
    kaext_watch_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.elem.map_fd = (uint32_t)map_fd;
    attr.elem.key = (uint64_t)(uintptr_t)key;
    attr.elem.value = (uint64_t)(uintptr_t)value;
    return (int)kaext_watch_sys(KAEXT_WATCH_MAP_LOOKUP_ELEM, &attr);
}

#else /* not Linux */

static int kaext_watch_map_create(uint32_t type, uint32_t key_size, uint32_t value_size, uint32_t max_entries,
                                  const char *name)
{
    (void)type, (void)key_size, (void)value_size, (void)max_entries, (void)name;
    errno = ENOSYS;
    return -1;
}
static int kaext_watch_prog_load(uint32_t type, const void *insns, uint32_t n, const char *name, char *log,
                                 uint32_t log_size)
{
    (void)type, (void)insns, (void)n, (void)name, (void)log, (void)log_size;
    errno = ENOSYS;
    return -1;
}
static int kaext_watch_raw_tp_open(const char *name, int prog_fd)
{
    (void)name, (void)prog_fd;
    errno = ENOSYS;
    return -1;
}
static int kaext_watch_map_lookup(int map_fd, const void *key, void *value)
{
    (void)map_fd, (void)key, (void)value;
    errno = ENOSYS;
    return -1;
}

#endif /* __linux__ */
#endif /* KAEXT_WATCH_H */
