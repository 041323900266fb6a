/*
 * kaext_bpf.h -- the BPF programs of kaext.enforce, assembled here, loaded with bpf(2).
 *
 * Linux only (4.13+ for sock_ops, 5.3+ for cgroup sockopt; bpf_setsockopt takes
 * SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_SYNCNT and TCP_USER_TIMEOUT
 * since Linux 5.9).  No clang, kernel headers or libbpf: the instructions are written
 * below with a few encoding macros, the way systemd builds its cgroup firewall,
 * and the bpf(2) attribute layouts used are spelled out (they are a stable ABI:
 * fields are only ever appended).
 *
 * One BPF array map of two entries is shared by both programs:
 *   key 0: the policy (kaext_bpf_config): which options to set and their values in
 *          kernel units (SO_KEEPALIVE 0/1, TCP_KEEPIDLE s, TCP_KEEPINTVL s,
 *          TCP_KEEPCNT probes, TCP_USER_TIMEOUT ms, TCP_SYNCNT SYN retransmissions:
 *          the connect timeout), the flags (respect_existing, force)
 *          and the id (inode) of the cgroup it was made for;
 *   key 1: the counters (kaext_bpf_counters), added to atomically by the program.
 * Changing the policy is an update of key 0; the next connection reads it.
 *
 * KAEXT_BPF_SOCK_OPS: a BPF_PROG_TYPE_SOCK_OPS program.  On BPF_SOCK_OPS_TCP_CONNECT_CB
 * (tcp_connect(), before the SYN is sent) it sets the connect timeout (TCP_SYNCNT) and
 * the user timeout the policy has, so that they bound the connect itself (not with
 * respect_existing, which decides at establishment); a refusal is counted as failed
 * (last_option the option's bit).  On
 * BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB and _PASSIVE_ESTABLISHED_CB (a connection of a
 * process in the cgroup, or a descendant, has just been established, either end)
 * it calls bpf_setsockopt for each option of the policy (SO_KEEPALIVE last).  With respect_existing it
 * first reads SO_KEEPALIVE back (bpf_getsockopt, Linux 6.1+) and leaves the connection
 * alone when the program has turned it on, or when it cannot be read (counted as
 * failed, last_option KAEXT_BPF_READ_KEEPALIVE).  Per connection it counts one of applied,
 * skipped (respected) or failed (a bpf_setsockopt returned an error; the error and
 * the option are kept in last_errno / last_option).
 *
 * Nested cgroups: both programs first claim the connection (KAEXT_BPF_CLAIM below), so
 * the nearest enforced cgroup's policy applies whole and its ancestors' programs leave it.
 *
 * KAEXT_BPF_SETSOCKOPT: a BPF_PROG_TYPE_CGROUP_SOCKOPT program attached as
 * BPF_CGROUP_SETSOCKOPT.  When a process of the cgroup calls setsockopt on a TCP
 * socket for one of the five options, it claims the connection, and with the
 * KAEXT_BPF_FORCE flag, for the options the policy sets, replaces the value in the
 * kernel's copy of the argument with the policy's (the call then succeeds with that
 * value); any other call passes unchanged, the program returning before any helper call.
 *
 * On other systems every function fails with ENOSYS, so the extension builds
 * everywhere.
 */
#ifndef KAEXT_BPF_H
#define KAEXT_BPF_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define KAEXT_BPF_SOCK_OPS 0
#define KAEXT_BPF_SETSOCKOPT 1

/* bits of kaext_bpf_config.mask, in the order the program applies them */
#define KAEXT_BPF_KEEPALIVE 0
#define KAEXT_BPF_IDLE 1
#define KAEXT_BPF_INTERVAL 2
#define KAEXT_BPF_COUNT 3
#define KAEXT_BPF_USER_TIMEOUT 4
#define KAEXT_BPF_CONNECT_TIMEOUT 5
#define KAEXT_BPF_NOPTIONS 6
/* kaext_bpf_counters.last_option of a failed bpf_getsockopt(SO_KEEPALIVE) (respect_existing) */
#define KAEXT_BPF_READ_KEEPALIVE 6
/* bits of kaext_bpf_config.flags */
#define KAEXT_BPF_RESPECT_EXISTING 1u
/* the setsockopt program replaces the values (without it: it only claims the socket) */
#define KAEXT_BPF_FORCE 2u
/* Nested cgroups: the kernel runs every program of the hook, the socket's own cgroup's
 * first, then each ancestor's (BPF_F_ALLOW_MULTI).  The first kaext program to run, the
 * nearest enforced cgroup's, claims the connection and the later (ancestors') ones leave
 * it, so one policy applies whole.  sock_ops: the claim is KAEXT_BPF_CLAIM in the context's
 * `reply` (one run's context, shared by the programs of that run; the established
 * callbacks' reply is not used by the kernel).  setsockopt: the claim is the four bytes
 * KAEXT_BPF_CLAIM_BYTES at KAEXT_BPF_CLAIM_AT of the kernel's copy of the option value
 * (at least 16 bytes; the kernel reads an int from the first 4 for these options). */
#define KAEXT_BPF_CLAIM 0x6b616578u
#define KAEXT_BPF_CLAIM_BYTES "kaex"
#define KAEXT_BPF_CLAIM_AT 12

typedef struct {
    uint32_t mask;
    uint32_t flags;
    uint32_t value[KAEXT_BPF_NOPTIONS]; /* indexed by KAEXT_BPF_KEEPALIVE .. (the connect timeout
                                         * where a map of five options had its padding) */
    uint64_t cgroup_id;
} kaext_bpf_config;

typedef struct {
    uint64_t applied;
    uint64_t skipped;
    uint64_t failed;
    int32_t last_errno;  /* negative, as bpf_setsockopt returned it; 0: none yet */
    uint32_t last_option; /* KAEXT_BPF_KEEPALIVE .. of that failure */
} kaext_bpf_counters;

#define KAEXT_BPF_VALUE_SIZE 48
#define KAEXT_BPF_MAP_ENTRIES 2 /* key 0: kaext_bpf_config, key 1: kaext_bpf_counters */

#define KAEXT_BPF_TAG_SIZE 8
#define KAEXT_BPF_OBJ_NAME_LEN 16

/* struct bpf_prog_info / bpf_map_info, the leading members used here (the kernel takes a
 * shorter buffer and fills what fits) */
typedef struct {
    uint32_t type, id;
    uint8_t tag[KAEXT_BPF_TAG_SIZE];
    uint32_t jited_prog_len, xlated_prog_len;
    uint64_t jited_prog_insns, xlated_prog_insns, load_time;
    uint32_t created_by_uid, nr_map_ids;
    uint64_t map_ids;
    char name[KAEXT_BPF_OBJ_NAME_LEN];
} kaext_bpf_prog_data;

typedef struct {
    uint32_t type, id, key_size, value_size, max_entries, map_flags;
} kaext_bpf_map_info;

#ifdef __linux__

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

_Static_assert(sizeof(kaext_bpf_config) <= KAEXT_BPF_VALUE_SIZE, "the policy fits a map value");
_Static_assert(sizeof(kaext_bpf_counters) <= KAEXT_BPF_VALUE_SIZE, "the counters fit a map value");

#ifndef TCP_USER_TIMEOUT
#define TCP_USER_TIMEOUT 18
#endif
#ifndef TCP_SYNCNT
#define TCP_SYNCNT 7
#endif
_Static_assert(offsetof(kaext_bpf_config, cgroup_id) == 32, "the map value keeps its layout");

/* --- the kernel's ABI (include/uapi/linux/bpf.h) ------------------------------------ */
enum {
    KAEXT_BPF_MAP_CREATE = 0,
    KAEXT_BPF_MAP_LOOKUP_ELEM = 1,
    KAEXT_BPF_MAP_UPDATE_ELEM = 2,
    KAEXT_BPF_PROG_LOAD = 5,
    KAEXT_BPF_OBJ_PIN = 6,
    KAEXT_BPF_OBJ_GET = 7,
    KAEXT_BPF_PROG_ATTACH = 8,
    KAEXT_BPF_PROG_DETACH = 9,
    KAEXT_BPF_PROG_GET_FD_BY_ID = 13,
    KAEXT_BPF_MAP_GET_FD_BY_ID = 14,
    KAEXT_BPF_OBJ_GET_INFO_BY_FD = 15,
    KAEXT_BPF_PROG_QUERY = 16,
};
#define KAEXT_BPF_MAP_TYPE_ARRAY 2
#define KAEXT_BPF_PROG_TYPE_SOCK_OPS 13
#define KAEXT_BPF_PROG_TYPE_CGROUP_SOCKOPT 25
#define KAEXT_BPF_CGROUP_SOCK_OPS 3
#define KAEXT_BPF_CGROUP_SETSOCKOPT 22
#define KAEXT_BPF_F_ALLOW_MULTI 2u
#define KAEXT_BPF_F_QUERY_EFFECTIVE 1u
#define KAEXT_BPF_F_STRICT_ALIGNMENT 1u
#define KAEXT_BPF_FUNC_map_lookup_elem 1
#define KAEXT_BPF_FUNC_setsockopt 49
#define KAEXT_BPF_FUNC_getsockopt 57
#define KAEXT_BPF_SOCK_OPS_TCP_CONNECT_CB 3
#define KAEXT_BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB 4
#define KAEXT_BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB 5
#define KAEXT_BPF_PSEUDO_MAP_FD 1
/* struct bpf_sock_ops: op at 0, reply at 4.  struct bpf_sockopt: sk 0, optval 8,
 * optval_end 16, level 24, optname 28, optlen 32.  struct bpf_sock: protocol at 12.
 * struct bpf_prog_info: id 4, tag 8, nr_map_ids 52, map_ids 56, name 64.
 * struct bpf_map_info: id 4. */
#define KAEXT_SOCK_OPS_OP 0
#define KAEXT_SOCK_OPS_REPLY 4
#define KAEXT_SOCKOPT_SK 0
#define KAEXT_SOCKOPT_OPTVAL 8
#define KAEXT_SOCKOPT_OPTVAL_END 16
#define KAEXT_SOCKOPT_LEVEL 24
#define KAEXT_SOCKOPT_OPTNAME 28
#define KAEXT_SOCKOPT_OPTLEN 32
#define KAEXT_BPF_SOCK_PROTOCOL 12
#define KAEXT_BPF_FS_MAGIC 0xcafe4a11u
#define KAEXT_CGROUP2_MAGIC 0x63677270u

typedef struct {
    uint8_t code;
    uint8_t regs; /* dst in the low nibble, src in the high one (little and big endian alike) */
    int16_t off;
    int32_t imm;
} kaext_insn;

/* union bpf_attr, the members used here, padded to the size every kernel accepts */
typedef union {
    struct {
        uint32_t map_type, key_size, value_size, max_entries, map_flags;
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
        uint64_t pathname;
        uint32_t bpf_fd, file_flags;
    } obj;
    struct {
        uint32_t target_fd, attach_bpf_fd, attach_type, attach_flags;
    } attach;
    struct {
        uint32_t target_fd, attach_type, query_flags, attach_flags;
        uint64_t prog_ids;
        uint32_t prog_cnt;
    } query;
    struct {
        uint32_t id, next_id, open_flags;
    } get_id;
    struct {
        uint32_t bpf_fd, info_len;
        uint64_t info;
    } info;
    unsigned char bytes[128];
} kaext_bpf_attr;

static long kaext_bpf_sys(int cmd, kaext_bpf_attr *attr)
{
    return syscall(__NR_bpf, cmd, attr, sizeof(*attr));
}

/* --- a small assembler: instructions, and jumps to labels resolved at the end ---------- */
#define KAEXT_BPF_MAX_INSNS 256
#define KAEXT_BPF_MAX_LABELS 32

typedef struct {
    kaext_insn insn[KAEXT_BPF_MAX_INSNS];
    int label_of[KAEXT_BPF_MAX_INSNS]; /* jump target label + 1, 0: not a jump */
    int label_at[KAEXT_BPF_MAX_LABELS];
    int n, nlabels, overflow;
} kaext_asm;

/* opcode parts (the classic BPF / eBPF encoding) */
#define K_LD 0x00
#define K_LDX 0x01
#define K_ST 0x02
#define K_STX 0x03
#define K_JMP 0x05
#define K_ALU64 0x07
#define K_W 0x00
#define K_B 0x10
#define K_DW 0x18
#define K_IMM 0x00
#define K_MEM 0x60
#define K_ATOMIC 0xc0
#define K_K 0x00
#define K_X 0x08
#define K_ADD 0x00
#define K_OR 0x40
#define K_AND 0x50
#define K_RSH 0x70
#define K_MOV 0xb0
#define K_NEG 0x80
#define K_JA 0x00
#define K_JEQ 0x10
#define K_JGT 0x20
#define K_JNE 0x50
#define K_CALL 0x80
#define K_EXIT 0x90

static void kaext_emit(kaext_asm *a, int code, int dst, int src, int off, int32_t imm, int label)
{
    if (a->n >= KAEXT_BPF_MAX_INSNS) {
        a->overflow = 1;
        return;
    }
    kaext_insn *i = &a->insn[a->n];
    i->code = (uint8_t)code;
    i->regs = (uint8_t)((dst & 0xf) | ((src & 0xf) << 4));
    i->off = (int16_t)off;
    i->imm = imm;
    a->label_of[a->n] = label + 1;
    a->n++;
}

static int kaext_label(kaext_asm *a)
{
    if (a->nlabels >= KAEXT_BPF_MAX_LABELS) {
        a->overflow = 1;
        return 0;
    }
    a->label_at[a->nlabels] = -1;
    return a->nlabels++;
}

static void kaext_here(kaext_asm *a, int label) { a->label_at[label] = a->n; }

static int kaext_resolve(kaext_asm *a)
{
    if (a->overflow)
        return -1;
    for (int i = 0; i < a->n; i++) {
        int l = a->label_of[i] - 1;
        if (l < 0)
            continue;
        if (a->label_at[l] < 0)
            return -1;
        a->insn[i].off = (int16_t)(a->label_at[l] - (i + 1));
    }
    return 0;
}

/* the instructions, by what they do */
#define MOV64_REG(d, s) kaext_emit(a, K_ALU64 | K_MOV | K_X, d, s, 0, 0, -1)
#define MOV64_IMM(d, k) kaext_emit(a, K_ALU64 | K_MOV | K_K, d, 0, 0, k, -1)
#define ADD64_IMM(d, k) kaext_emit(a, K_ALU64 | K_ADD | K_K, d, 0, 0, k, -1)
#define AND64_IMM(d, k) kaext_emit(a, K_ALU64 | K_AND | K_K, d, 0, 0, k, -1)
#define OR64_REG(d, s) kaext_emit(a, K_ALU64 | K_OR | K_X, d, s, 0, 0, -1)
#define NEG64(d) kaext_emit(a, K_ALU64 | K_NEG, d, 0, 0, 0, -1)
#define LDX_W(d, s, o) kaext_emit(a, K_LDX | K_MEM | K_W, d, s, o, 0, -1)
#define LDX_DW(d, s, o) kaext_emit(a, K_LDX | K_MEM | K_DW, d, s, o, 0, -1)
#define STX_W(d, o, s) kaext_emit(a, K_STX | K_MEM | K_W, d, s, o, 0, -1)
#define ST_W(d, o, k) kaext_emit(a, K_ST | K_MEM | K_W, d, 0, o, k, -1)
#define ATOMIC_ADD_DW(d, o, s) kaext_emit(a, K_STX | K_ATOMIC | K_DW, d, s, o, K_ADD, -1)
#define RSH64_IMM(d, k) kaext_emit(a, K_ALU64 | K_RSH | K_K, d, 0, 0, k, -1)
#define LDX_B(d, s, o) kaext_emit(a, K_LDX | K_MEM | K_B, d, s, o, 0, -1)
#define STX_B(d, o, s) kaext_emit(a, K_STX | K_MEM | K_B, d, s, o, 0, -1)
#define JEQ_IMM(d, k, l) kaext_emit(a, K_JMP | K_JEQ | K_K, d, 0, 0, k, l)
#define JNE_IMM(d, k, l) kaext_emit(a, K_JMP | K_JNE | K_K, d, 0, 0, k, l)
#define JGT_REG(d, s, l) kaext_emit(a, K_JMP | K_JGT | K_X, d, s, 0, 0, l)
#define JGT_IMM(d, k, l) kaext_emit(a, K_JMP | K_JGT | K_K, d, 0, 0, k, l)
#define JA(l) kaext_emit(a, K_JMP | K_JA, 0, 0, 0, 0, l)
#define CALL(f) kaext_emit(a, K_JMP | K_CALL, 0, 0, 0, f, -1)
#define EXIT() kaext_emit(a, K_JMP | K_EXIT, 0, 0, 0, 0, -1)
/* r = the map (a 64-bit load of the map's descriptor, two instruction slots) */
#define LD_MAP_FD(d, fd)                                                              \
    do {                                                                              \
        kaext_emit(a, K_LD | K_DW | K_IMM, d, KAEXT_BPF_PSEUDO_MAP_FD, 0, fd, -1);    \
        kaext_emit(a, 0, 0, 0, 0, 0, -1);                                             \
    } while (0)

/* r0 = &map[key] or NULL (clobbers r1-r5; uses the stack slot at r10-4) */
static void kaext_lookup(kaext_asm *a, int map_fd, int32_t key)
{
    ST_W(10, -4, key);
    LD_MAP_FD(1, map_fd);
    MOV64_REG(2, 10);
    ADD64_IMM(2, -4);
    CALL(KAEXT_BPF_FUNC_map_lookup_elem);
}

static const int kaext_bpf_level[KAEXT_BPF_NOPTIONS] = {SOL_SOCKET, IPPROTO_TCP, IPPROTO_TCP, IPPROTO_TCP,
                                                        IPPROTO_TCP, IPPROTO_TCP};
static const int kaext_bpf_optname[KAEXT_BPF_NOPTIONS] = {SO_KEEPALIVE, TCP_KEEPIDLE,     TCP_KEEPINTVL,
                                                          TCP_KEEPCNT,  TCP_USER_TIMEOUT, TCP_SYNCNT};

#define CFG_VALUE(k) ((int)offsetof(kaext_bpf_config, value) + 4 * (k))

/* bpf_setsockopt of option k if the policy (r7) has it; a refusal sets r9 and the counters'
 * last_errno / last_option (r8).  Clobbers r0-r5. */
static void kaext_asm_set_option(kaext_asm *a, int k)
{
    int next = kaext_label(a);
    LDX_W(1, 7, (int)offsetof(kaext_bpf_config, mask));
    AND64_IMM(1, 1 << k);
    JEQ_IMM(1, 0, next);
    LDX_W(1, 7, CFG_VALUE(k));
    STX_W(10, -8, 1);
    MOV64_REG(1, 6);
    MOV64_IMM(2, kaext_bpf_level[k]);
    MOV64_IMM(3, kaext_bpf_optname[k]);
    MOV64_REG(4, 10);
    ADD64_IMM(4, -8);
    MOV64_IMM(5, 4);
    CALL(KAEXT_BPF_FUNC_setsockopt);
    JEQ_IMM(0, 0, next);
    MOV64_IMM(9, 1);
    STX_W(8, (int)offsetof(kaext_bpf_counters, last_errno), 0);
    ST_W(8, (int)offsetof(kaext_bpf_counters, last_option), k);
    kaext_here(a, next);
}

/* The sock_ops program.  r6 ctx, r7 policy, r8 counters, r9 "a setsockopt failed". */
static void kaext_asm_sock_ops(kaext_asm *a, int map_fd)
{
    int out = kaext_label(a), go = kaext_label(a), set = kaext_label(a);
    int skip = kaext_label(a), fail = kaext_label(a), unreadable = kaext_label(a);
    int established = kaext_label(a);
    MOV64_REG(6, 1);
    /* the callbacks kaext acts on */
    LDX_W(2, 6, KAEXT_SOCK_OPS_OP);
    JEQ_IMM(2, KAEXT_BPF_SOCK_OPS_TCP_CONNECT_CB, go);
    JEQ_IMM(2, KAEXT_BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, go);
    JEQ_IMM(2, KAEXT_BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB, go);
    JA(out);
    kaext_here(a, go);
    /* claimed by a nearer enforced cgroup's program, which ran first: its policy applies */
    LDX_W(2, 6, KAEXT_SOCK_OPS_REPLY);
    JEQ_IMM(2, (int32_t)KAEXT_BPF_CLAIM, out);
    MOV64_IMM(2, (int32_t)KAEXT_BPF_CLAIM);
    STX_W(6, KAEXT_SOCK_OPS_REPLY, 2);
    kaext_lookup(a, map_fd, 0);
    JEQ_IMM(0, 0, out);
    MOV64_REG(7, 0);
    kaext_lookup(a, map_fd, 1);
    JEQ_IMM(0, 0, out);
    MOV64_REG(8, 0);
    /* the connect, before its SYN: the options that bound it (counted only if refused);
     * not with respect_existing, whose choice is made once the program had its say */
    LDX_W(2, 6, KAEXT_SOCK_OPS_OP);
    JNE_IMM(2, KAEXT_BPF_SOCK_OPS_TCP_CONNECT_CB, established);
    LDX_W(1, 7, (int)offsetof(kaext_bpf_config, flags));
    AND64_IMM(1, KAEXT_BPF_RESPECT_EXISTING);
    JNE_IMM(1, 0, out);
    MOV64_IMM(9, 0);
    kaext_asm_set_option(a, KAEXT_BPF_CONNECT_TIMEOUT);
    kaext_asm_set_option(a, KAEXT_BPF_USER_TIMEOUT);
    JNE_IMM(9, 0, fail);
    JA(out);
    kaext_here(a, established);
    /* respect_existing: SO_KEEPALIVE already on -> skipped */
    LDX_W(1, 7, (int)offsetof(kaext_bpf_config, flags));
    AND64_IMM(1, KAEXT_BPF_RESPECT_EXISTING);
    JEQ_IMM(1, 0, set);
    ST_W(10, -8, 0);
    MOV64_REG(1, 6);
    MOV64_IMM(2, SOL_SOCKET);
    MOV64_IMM(3, SO_KEEPALIVE);
    MOV64_REG(4, 10);
    ADD64_IMM(4, -8);
    MOV64_IMM(5, 4);
    CALL(KAEXT_BPF_FUNC_getsockopt);
    JNE_IMM(0, 0, unreadable);
    LDX_W(1, 10, -8);
    JNE_IMM(1, 0, skip);
    kaext_here(a, set);
    MOV64_IMM(9, 0);
    /* SO_KEEPALIVE last: the TCP options set before it do not re-arm the keepalive
     * timer (they do once SO_KEEPALIVE is on), so each end arms it once */
    for (int i = 0; i < KAEXT_BPF_NOPTIONS; i++)
        kaext_asm_set_option(a, (i + 1) % KAEXT_BPF_NOPTIONS);
    JNE_IMM(9, 0, fail);
    MOV64_IMM(1, 1);
    ATOMIC_ADD_DW(8, (int)offsetof(kaext_bpf_counters, applied), 1);
    JA(out);
    kaext_here(a, skip);
    MOV64_IMM(1, 1);
    ATOMIC_ADD_DW(8, (int)offsetof(kaext_bpf_counters, skipped), 1);
    JA(out);
    kaext_here(a, unreadable); /* the program's choice unknown: left alone, counted as failed */
    STX_W(8, (int)offsetof(kaext_bpf_counters, last_errno), 0);
    ST_W(8, (int)offsetof(kaext_bpf_counters, last_option), KAEXT_BPF_READ_KEEPALIVE);
    kaext_here(a, fail);
    MOV64_IMM(1, 1);
    ATOMIC_ADD_DW(8, (int)offsetof(kaext_bpf_counters, failed), 1);
    kaext_here(a, out);
    MOV64_IMM(0, 1);
    EXIT();
}

/* The setsockopt program.  r6 ctx, r7 policy, r8 optval, r9 the option's index.
 * Every call of the cgroup's processes runs it: the options kaext does not own leave
 * after two loads and a few compares, before any helper call.  optval is a packet
 * pointer: the verifier of kernels without efficient unaligned access checks its
 * accesses as if it were 2 bytes past a 4-byte boundary, so it is read and written a
 * byte at a time (always allowed), inside the range checked first. */
static void kaext_asm_setsockopt(kaext_asm *a, int map_fd)
{
    int out = kaext_label(a), found = kaext_label(a), sized = kaext_label(a);
    int unclaimed = kaext_label(a), write = kaext_label(a);
    MOV64_REG(6, 1);
    LDX_W(2, 6, KAEXT_SOCKOPT_LEVEL);
    LDX_W(3, 6, KAEXT_SOCKOPT_OPTNAME);
    for (int k = 0; k < KAEXT_BPF_NOPTIONS; k++) {
        int next = kaext_label(a);
        JNE_IMM(3, kaext_bpf_optname[k], next);
        JNE_IMM(2, kaext_bpf_level[k], next);
        MOV64_IMM(9, k);
        JA(found);
        kaext_here(a, next);
    }
    JA(out);
    kaext_here(a, found);
    LDX_W(1, 6, KAEXT_SOCKOPT_OPTLEN);
    JGT_IMM(1, 3, sized); /* shorter than an int: the kernel refuses it; not ours to change */
    JA(out);
    kaext_here(a, sized);
    LDX_DW(8, 6, KAEXT_SOCKOPT_OPTVAL);
    LDX_DW(1, 6, KAEXT_SOCKOPT_OPTVAL_END);
    MOV64_REG(2, 8);
    ADD64_IMM(2, KAEXT_BPF_CLAIM_AT + 4);
    JGT_REG(2, 1, out);
    LDX_DW(1, 6, KAEXT_SOCKOPT_SK);
    LDX_W(1, 1, KAEXT_BPF_SOCK_PROTOCOL);
    JNE_IMM(1, IPPROTO_TCP, out);
    /* claimed by a nearer enforced cgroup's program, which ran first: its policy applies */
    for (int i = 0; i < 4; i++) {
        LDX_B(1, 8, KAEXT_BPF_CLAIM_AT + i);
        JNE_IMM(1, (unsigned char)KAEXT_BPF_CLAIM_BYTES[i], unclaimed);
    }
    JA(out);
    kaext_here(a, unclaimed);
    for (int i = 0; i < 4; i++) {
        MOV64_IMM(1, (unsigned char)KAEXT_BPF_CLAIM_BYTES[i]);
        STX_B(8, KAEXT_BPF_CLAIM_AT + i, 1);
    }
    kaext_lookup(a, map_fd, 0);
    JEQ_IMM(0, 0, out);
    MOV64_REG(7, 0);
    LDX_W(1, 7, (int)offsetof(kaext_bpf_config, flags));
    AND64_IMM(1, KAEXT_BPF_FORCE);
    JEQ_IMM(1, 0, out); /* not forced: the claim alone (an ancestor's force stays out) */
    for (int k = 0; k < KAEXT_BPF_NOPTIONS; k++) {
        int next = kaext_label(a);
        JNE_IMM(9, k, next);
        LDX_W(1, 7, (int)offsetof(kaext_bpf_config, mask));
        AND64_IMM(1, 1 << k);
        JEQ_IMM(1, 0, out); /* an option the policy leaves: the program's own value */
        LDX_W(1, 7, CFG_VALUE(k));
        JA(write);
        kaext_here(a, next);
    }
    JA(out);
    kaext_here(a, write);
    for (int i = 0; i < 4; i++) { /* the int in host byte order */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        STX_B(8, 3 - i, 1);
#else
        STX_B(8, i, 1);
#endif
        if (i < 3)
            RSH64_IMM(1, 8);
    }
    kaext_here(a, out);
    MOV64_IMM(0, 1);
    EXIT();
}

/* Load program `kind` (KAEXT_BPF_SOCK_OPS / KAEXT_BPF_SETSOCKOPT) using map `map_fd`:
 * its descriptor, or -1 with errno (the verifier's log, if any, in `log`, a C string).
 * `strict`: BPF_F_STRICT_ALIGNMENT, the verifier's checks of a kernel without efficient
 * unaligned access (where packet pointers count 2 bytes past a 4-byte boundary). */
static int kaext_bpf_load(int kind, int map_fd, char *log, unsigned log_size, int strict)
{
    kaext_asm a;
    kaext_bpf_attr attr;
    memset(&a, 0, sizeof(a));
    if (kind == KAEXT_BPF_SOCK_OPS)
        kaext_asm_sock_ops(&a, map_fd);
    else if (kind == KAEXT_BPF_SETSOCKOPT)
        kaext_asm_setsockopt(&a, map_fd);
    else {
        errno = EINVAL;
        return -1;
    }
    if (kaext_resolve(&a) < 0) {
        errno = E2BIG;
        return -1;
    }
    memset(&attr, 0, sizeof(attr));
    attr.load.prog_type = kind == KAEXT_BPF_SOCK_OPS ? KAEXT_BPF_PROG_TYPE_SOCK_OPS : KAEXT_BPF_PROG_TYPE_CGROUP_SOCKOPT;
    attr.load.expected_attach_type = kind == KAEXT_BPF_SOCK_OPS ? 0 : KAEXT_BPF_CGROUP_SETSOCKOPT;
    attr.load.insn_cnt = (uint32_t)a.n;
    attr.load.prog_flags = strict ? KAEXT_BPF_F_STRICT_ALIGNMENT : 0;
    attr.load.insns = (uint64_t)(uintptr_t)a.insn;
    attr.load.license = (uint64_t)(uintptr_t) "GPL";
    memcpy(attr.load.prog_name, kind == KAEXT_BPF_SOCK_OPS ? "kaext_sockops" : "kaext_setsockopt", 14);
    attr.load.prog_name[15] = 0;
    if (log != NULL && log_size > 0) {
        log[0] = 0;
        attr.load.log_level = 1;
        attr.load.log_size = log_size;
        attr.load.log_buf = (uint64_t)(uintptr_t)log;
    }
    int fd = (int)kaext_bpf_sys(KAEXT_BPF_PROG_LOAD, &attr);
    if (fd < 0 && errno == ENOSPC && log != NULL) {
        /* the log did not fit: load again without one, for the errno */
        attr.load.log_level = 0;
        attr.load.log_size = 0;
        attr.load.log_buf = 0;
        fd = (int)kaext_bpf_sys(KAEXT_BPF_PROG_LOAD, &attr);
    }
    if (log != NULL && log_size > 0)
        log[log_size - 1] = 0; /* the log is a C string: what follows its NUL is not the log */
    return fd;
}

static int kaext_bpf_map_create(void)
{
    kaext_bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.map.map_type = KAEXT_BPF_MAP_TYPE_ARRAY;
    attr.map.key_size = 4;
    attr.map.value_size = KAEXT_BPF_VALUE_SIZE;
    attr.map.max_entries = KAEXT_BPF_MAP_ENTRIES;
    return (int)kaext_bpf_sys(KAEXT_BPF_MAP_CREATE, &attr);
}

static int kaext_bpf_map_elem(int cmd, int map_fd, uint32_t key, void *value)
{
    kaext_bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.elem.map_fd = (uint32_t)map_fd;
    attr.elem.key = (uint64_t)(uintptr_t)&key;
    attr.elem.value = (uint64_t)(uintptr_t)value;
    return (int)kaext_bpf_sys(cmd, &attr);
}

static int kaext_bpf_config_write(int map_fd, const kaext_bpf_config *c)
{
    unsigned char buf[KAEXT_BPF_VALUE_SIZE];
    memset(buf, 0, sizeof(buf));
    memcpy(buf, c, sizeof(*c));
    return kaext_bpf_map_elem(KAEXT_BPF_MAP_UPDATE_ELEM, map_fd, 0, buf);
}

/* Entry ``key`` of the map (0: the policy, 1: the counters) into ``out`` (``size`` bytes). */
static int kaext_bpf_entry_read(int map_fd, uint32_t key, void *out, size_t size)
{
    unsigned char buf[KAEXT_BPF_VALUE_SIZE];
    if (kaext_bpf_map_elem(KAEXT_BPF_MAP_LOOKUP_ELEM, map_fd, key, buf) < 0)
        return -1;
    memcpy(out, buf, size);
    return 0;
}

static int kaext_bpf_config_read(int map_fd, kaext_bpf_config *c)
{
    return kaext_bpf_entry_read(map_fd, 0, c, sizeof(*c));
}

static int kaext_bpf_counters_read(int map_fd, kaext_bpf_counters *c)
{
    return kaext_bpf_entry_read(map_fd, 1, c, sizeof(*c));
}

static int kaext_bpf_pin(int fd, const char *path)
{
    kaext_bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.obj.pathname = (uint64_t)(uintptr_t)path;
    attr.obj.bpf_fd = (uint32_t)fd;
    return (int)kaext_bpf_sys(KAEXT_BPF_OBJ_PIN, &attr);
}

static int kaext_bpf_obj_get(const char *path)
{
    kaext_bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.obj.pathname = (uint64_t)(uintptr_t)path;
    return (int)kaext_bpf_sys(KAEXT_BPF_OBJ_GET, &attr);
}

static int kaext_bpf_attach(int cgroup_fd, int prog_fd, int kind, int detach)
{
    kaext_bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.attach.target_fd = (uint32_t)cgroup_fd;
    attr.attach.attach_bpf_fd = (uint32_t)prog_fd;
    attr.attach.attach_type = kind == KAEXT_BPF_SOCK_OPS ? KAEXT_BPF_CGROUP_SOCK_OPS : KAEXT_BPF_CGROUP_SETSOCKOPT;
    attr.attach.attach_flags = detach ? 0 : KAEXT_BPF_F_ALLOW_MULTI;
    return (int)kaext_bpf_sys(detach ? KAEXT_BPF_PROG_DETACH : KAEXT_BPF_PROG_ATTACH, &attr);
}

/* Programs (KAEXT_BPF_SOCK_OPS / _SETSOCKOPT) attached to the cgroup, their ids in `ids`
 * (room for *cnt; *cnt becomes how many there are); `effective`: the programs that run
 * for its sockets, in the order they run (its own first, then its ancestors'). */
static int kaext_bpf_prog_query(int cgroup_fd, int kind, int effective, uint32_t *ids, uint32_t *cnt)
{
    kaext_bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.query.target_fd = (uint32_t)cgroup_fd;
    attr.query.attach_type = kind == KAEXT_BPF_SOCK_OPS ? KAEXT_BPF_CGROUP_SOCK_OPS : KAEXT_BPF_CGROUP_SETSOCKOPT;
    attr.query.query_flags = effective ? KAEXT_BPF_F_QUERY_EFFECTIVE : 0;
    attr.query.prog_ids = (uint64_t)(uintptr_t)ids;
    attr.query.prog_cnt = *cnt;
    int r = (int)kaext_bpf_sys(KAEXT_BPF_PROG_QUERY, &attr);
    if (r == 0 || errno == ENOSPC)
        *cnt = attr.query.prog_cnt;
    return r;
}

/* A descriptor for the program (`map` 0) or map (`map` 1) with that id. */
static int kaext_bpf_fd_by_id(int map, uint32_t id)
{
    kaext_bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.get_id.id = id;
    return (int)kaext_bpf_sys(map ? KAEXT_BPF_MAP_GET_FD_BY_ID : KAEXT_BPF_PROG_GET_FD_BY_ID, &attr);
}

static int kaext_bpf_obj_info(int fd, void *info, uint32_t size)
{
    kaext_bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    memset(info, 0, size);
    attr.info.bpf_fd = (uint32_t)fd;
    attr.info.info_len = size;
    attr.info.info = (uint64_t)(uintptr_t)info;
    return (int)kaext_bpf_sys(KAEXT_BPF_OBJ_GET_INFO_BY_FD, &attr);
}

/* The program's id, tag, name and first map id (0: none). */
static int kaext_bpf_prog_info(int prog_fd, kaext_bpf_prog_data *info, uint32_t *map_id)
{
    uint32_t ids[4] = {0};
    kaext_bpf_prog_data i;
    if (kaext_bpf_obj_info(prog_fd, &i, sizeof(i)) < 0)
        return -1;
    uint32_t n = i.nr_map_ids;
    memset(&i, 0, sizeof(i));
    i.nr_map_ids = n < 4 ? n : 4;
    i.map_ids = (uint64_t)(uintptr_t)ids;
    kaext_bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.info.bpf_fd = (uint32_t)prog_fd;
    attr.info.info_len = sizeof(i);
    attr.info.info = (uint64_t)(uintptr_t)&i;
    if (kaext_bpf_sys(KAEXT_BPF_OBJ_GET_INFO_BY_FD, &attr) < 0)
        return -1;
    *info = i;
    *map_id = n ? ids[0] : 0;
    return 0;
}

static int kaext_bpf_map_id(int map_fd, uint32_t *id)
{
    kaext_bpf_map_info i;
    if (kaext_bpf_obj_info(map_fd, &i, sizeof(i)) < 0)
        return -1;
    *id = i.id;
    return 0;
}

/* A BPF file system only root can write to (the kernel's default would be 0777's
 * "the mode of the mount point"; kaext's pins are root's). */
static int kaext_bpf_mount(const char *path) { return mount("bpf", path, "bpf", 0, "mode=0700"); }

#else /* not Linux */

static int kaext_bpf_enosys(void)
{
    errno = ENOSYS;
    return -1;
}
static int kaext_bpf_load(int kind, int map_fd, char *log, unsigned log_size, int strict)
{
    (void)kind, (void)map_fd, (void)log, (void)log_size, (void)strict;
    return kaext_bpf_enosys();
}
static int kaext_bpf_map_create(void) { return kaext_bpf_enosys(); }
static int kaext_bpf_config_write(int map_fd, const kaext_bpf_config *c)
{
    (void)map_fd, (void)c;
    return kaext_bpf_enosys();
}
static int kaext_bpf_config_read(int map_fd, kaext_bpf_config *c)
{
    (void)map_fd, (void)c;
    return kaext_bpf_enosys();
}
static int kaext_bpf_counters_read(int map_fd, kaext_bpf_counters *c)
{
    (void)map_fd, (void)c;
    return kaext_bpf_enosys();
}
static int kaext_bpf_pin(int fd, const char *path)
{
    (void)fd, (void)path;
    return kaext_bpf_enosys();
}
static int kaext_bpf_obj_get(const char *path)
{
    (void)path;
    return kaext_bpf_enosys();
}
static int kaext_bpf_attach(int cgroup_fd, int prog_fd, int kind, int detach)
{
    (void)cgroup_fd, (void)prog_fd, (void)kind, (void)detach;
    return kaext_bpf_enosys();
}
static int kaext_bpf_mount(const char *path)
{
    (void)path;
    return kaext_bpf_enosys();
}
static int kaext_bpf_prog_query(int cgroup_fd, int kind, int effective, uint32_t *ids, uint32_t *cnt)
{
    (void)cgroup_fd, (void)kind, (void)effective, (void)ids, (void)cnt;
    return kaext_bpf_enosys();
}
static int kaext_bpf_fd_by_id(int map, uint32_t id)
{
    (void)map, (void)id;
    return kaext_bpf_enosys();
}
static int kaext_bpf_prog_info(int prog_fd, kaext_bpf_prog_data *info, uint32_t *map_id)
{
    (void)prog_fd, (void)info, (void)map_id;
    return kaext_bpf_enosys();
}
static int kaext_bpf_map_id(int map_fd, uint32_t *id)
{
    (void)map_fd, (void)id;
    return kaext_bpf_enosys();
}

#endif /* __linux__ */
#endif /* KAEXT_BPF_H */
