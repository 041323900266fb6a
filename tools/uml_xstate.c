/* Preloaded into Debian's user-mode-linux 6.1 (linux.uml) by tools/uml.sh on hosts whose
 * XSAVE area is larger than UML 6.1 knows (AVX-512, AMX: 2.7-11 kB instead of 832 bytes).
 *
 * UML saves and restores a process's FPU state with ptrace(PTRACE_GETREGSET/SETREGSET,
 * NT_X86_XSTATE) and a buffer of sizeof(struct _xstate) (arch/x86/um/os-Linux/registers.c,
 * 832 bytes: x87/SSE, the XSAVE header, the AVX upper halves).  The host kernel refuses a
 * SETREGSET of any other size than its whole user XSAVE area
 * (arch/x86/kernel/fpu/regset.c, xstateregs_set: "if (pos != 0 || count !=
 * fpu_user_cfg.max_size) return -EFAULT"), so the first process UML starts dies
 * ("userspace - ptrace set fp regs failed, errno = 14", then "Attempted to kill init").
 * Upstream UML sizes the buffer from the host since "um: Fix FP register size for
 * XSTATE/XSAVE" (not in Debian's 6.1).
 *
 * Here each of UML's buffers has a shadow of the host's full size: a GETREGSET reads the
 * whole area into the shadow and gives UML its first bytes; a SETREGSET writes the shadow
 * with UML's bytes over its start.  A buffer never read (a new process's initial state)
 * is zero-extended with the components beyond it marked as in their initial state.
 * Every other ptrace request goes to the C library unchanged.
 *
 *   cc -O2 -shared -fPIC -o uml_xstate.so tools/uml_xstate.c -ldl
 *   LD_PRELOAD=./uml_xstate.so linux.uml ...
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#define KAEXT_XSTATE_MAX 65536   /* larger than any XSAVE area (11 kB with AMX) */
#define KAEXT_SHADOWS 4096       /* UML's live processes; more evict the oldest slot probed */
#define KAEXT_PROBES 16
#define KAEXT_HEADER 512         /* the XSAVE header: xstate_bv, then xcomp_bv */

struct shadow {
    void *key;                   /* UML's buffer */
    unsigned char *area;         /* the host's whole XSAVE area for it */
};

static struct shadow shadows[KAEXT_SHADOWS];
static size_t host_size;         /* the host's user XSAVE area (fpu_user_cfg.max_size) */
static unsigned char scratch[KAEXT_XSTATE_MAX];

static long raw_ptrace(long request, pid_t pid, void *addr, void *data)
{
    return syscall(SYS_ptrace, request, pid, addr, data);
}

static struct shadow *shadow_of(void *key, int create)
{
    size_t h = ((uintptr_t)key >> 4) * 2654435761u % KAEXT_SHADOWS, i;
    struct shadow *s;
    for (i = 0; i < KAEXT_PROBES; i++) {
        s = &shadows[(h + i) % KAEXT_SHADOWS];
        if (s->key == key)
            return s;
        if (s->key == NULL && create)
            break;
    }
    if (!create)
        return NULL;
    if (i == KAEXT_PROBES)
        s = &shadows[h];
    if (s->area == NULL && (s->area = malloc(KAEXT_XSTATE_MAX)) == NULL)
        return NULL;
    s->key = key;
    return s;
}

static int xstate_get(pid_t pid, struct iovec *uml)
{
    struct shadow *s = shadow_of(uml->iov_base, 1);
    struct iovec whole = {s ? (void *)s->area : (void *)scratch, KAEXT_XSTATE_MAX};
    if (raw_ptrace(PTRACE_GETREGSET, pid, (void *)NT_X86_XSTATE, &whole) < 0)
        return -1;
    host_size = whole.iov_len;
    if (uml->iov_len > whole.iov_len)
        uml->iov_len = whole.iov_len;
    memcpy(uml->iov_base, whole.iov_base, uml->iov_len);
    return 0;
}

static int xstate_set(pid_t pid, const struct iovec *uml)
{
    struct shadow *s = shadow_of(uml->iov_base, 0);
    struct iovec whole = {scratch, host_size};
    if (s)
        memcpy(scratch, s->area, host_size);
    else
        memset(scratch, 0, host_size);
    memcpy(scratch, uml->iov_base, uml->iov_len);
    if (!s && uml->iov_len >= KAEXT_HEADER + 16) {
        /* components past UML's buffer: in their initial state (x87, SSE, and AVX when the
           buffer holds its 256 bytes at offset 576, the standard format) */
        uint64_t keep = uml->iov_len >= 832 ? 0x7 : 0x3, bv, comp = 0;
        memcpy(&bv, scratch + KAEXT_HEADER, sizeof bv);
        bv &= keep;
        memcpy(scratch + KAEXT_HEADER, &bv, sizeof bv);
        memcpy(scratch + KAEXT_HEADER + 8, &comp, sizeof comp);
    }
    return (int)raw_ptrace(PTRACE_SETREGSET, pid, (void *)NT_X86_XSTATE, &whole);
}

long ptrace(enum __ptrace_request request, ...)
{
    static long (*next)(enum __ptrace_request, ...);
    va_list ap;
    pid_t pid;
    void *addr, *data;
    va_start(ap, request);
    pid = va_arg(ap, pid_t);
    addr = va_arg(ap, void *);
    data = va_arg(ap, void *);
    va_end(ap);
    if ((request == PTRACE_GETREGSET || request == PTRACE_SETREGSET) && (uintptr_t)addr == NT_X86_XSTATE) {
        struct iovec *iov = data;
        if (request == PTRACE_GETREGSET && iov->iov_len < KAEXT_XSTATE_MAX)
            return xstate_get(pid, iov);
        if (request == PTRACE_SETREGSET && host_size > iov->iov_len && host_size <= KAEXT_XSTATE_MAX)
            return xstate_set(pid, iov);
    }
    if (next == NULL)
        next = (long (*)(enum __ptrace_request, ...))dlsym(RTLD_NEXT, "ptrace");
    return next(request, pid, addr, data);
}
