/*
 * test_shim.c -- exercises kaext_shim.h on real loopback sockets, no Python.
 *
 * Built natively by tests/native/test_shim_c.py and cross-built for Windows by
 * .ci/steps/10-windows-cross.sh (x86_64 run under wine).
 *
 *   test_shim             print the constants table and the knob mechanisms,
 *                         then run the checks; exit 1 if any failed
 *   test_shim hold PORT IDLE INTERVAL
 *                         connect to 127.0.0.1:PORT, set idle/interval (in
 *                         seconds) through the shim, print "applied ...",
 *                         then wait until the peer closes the connection
 *
 * Output lines the tests parse:
 *   constant NAME=VALUE [fallback]
 *   knob NAME option=OPT optname=N mechanism=setsockopt|sio|none unit=U
 *   ok ... / FAIL ...
 *   summary checks=N failed=M
 */
#include "kaext_shim.h"
#include "test_check.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(_WIN32)
_Static_assert(SIO_KEEPALIVE_VALS == 0x98000004UL, "SIO_KEEPALIVE_VALS is _WSAIOW(IOC_VENDOR, 4)");
_Static_assert(sizeof(struct tcp_keepalive) == 12, "struct tcp_keepalive is three 32-bit u_long");
_Static_assert(KAEXT_V_SIO_KEEPALIVE_VALS == 0x98000004UL, "kaext's SIO_KEEPALIVE_VALS");
/* SOCKET is a UINT_PTR (32 bits on win32, 64 on win64); INVALID_SOCKET is ~0. */
_Static_assert(sizeof(kaext_sock) == sizeof(void *), "kaext_sock is pointer-sized");
_Static_assert(KAEXT_SOCK_MAX == (unsigned long long)UINTPTR_MAX - 1ULL, "KAEXT_SOCK_MAX is INVALID_SOCKET - 1");
#else
#  include <arpa/inet.h>
_Static_assert(KAEXT_SOCK_MAX == (unsigned long long)INT_MAX, "a file descriptor is an int");
#endif

/* How each knob is set here: probed once in main(), as the extension does at import. */
static int mech[KAEXT_NKNOBS];


/* A connected loopback pair: *client, *server.  Returns 0 on success. */
static int loopback_pair(kaext_sock *client, kaext_sock *server)
{
    struct sockaddr_in addr;
    kaext_optlen len = (kaext_optlen)sizeof addr;
    kaext_sock listener = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    if (KAEXT_BAD_SOCK(listener))
        return -1;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (bind(listener, (struct sockaddr *)&addr, (kaext_optlen)sizeof addr) != 0
        || listen(listener, 1) != 0
        || getsockname(listener, (struct sockaddr *)&addr, &len) != 0)
        return -1;
    *client = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    if (KAEXT_BAD_SOCK(*client)
        || connect(*client, (struct sockaddr *)&addr, (kaext_optlen)sizeof addr) != 0)
        return -1;
    *server = accept(listener, NULL, NULL);
    kaext_close(listener);
    return KAEXT_BAD_SOCK(*server) ? -1 : 0;
}

/* A value for knob k in unit u that every OS accepts. */
static int sample_value(int k, const char *u)
{
    if (k == KAEXT_COUNT)
        return 4;
    if (k == KAEXT_USER_TIMEOUT)
        return strcmp(u, "ms") == 0 ? 12345 : 17;
    if (k == KAEXT_IDLE)
        return strcmp(u, "ms") == 0 ? 61000 : 61;
    return strcmp(u, "ms") == 0 ? 11000 : 11;
}

static void print_tables(void)
{
    const kaext_constant *c;
    int k;
    for (c = kaext_constants; c->name != NULL; c++)
        printf("constant %s=%lld%s\n", c->name, c->value, c->fallback ? " fallback" : "");
    for (k = 0; k < KAEXT_NKNOBS; k++)
        printf("knob %s option=%s optname=%d mechanism=%s unit=%s\n", knob_names[k],
               kaext_knob_have[k] ? kaext_knob_name[k] : "-", kaext_knob_opt[k],
               mechanism_name(mech[k]), kaext_knob_unit(k, mech[k])[0] ? kaext_knob_unit(k, mech[k]) : "-");
}

static void test_knobs(kaext_sock fd)
{
    int k, err, step = -1;
    char what[160];
    for (k = 0; k < KAEXT_NKNOBS; k++) {
        kaext_plan plan;
        kaext_state st;
        int m = mech[k];
        memset(&plan, 0, sizeof plan);
        plan.set_mask = 1u << k;
        plan.keepalive = 1;
        plan.value[k] = sample_value(k, kaext_knob_unit(k, mech[k]));
        err = kaext_apply(fd, &plan, mech, &step);
        if (m == KAEXT_MECH_NONE) {
            /* never silently ignored: refused before any call */
            snprintf(what, sizeof what, "%s: unsupported knob refused with ENOPROTOOPT", knob_names[k]);
            check(err == KAEXT_ENOPROTOOPT && step == k, what, err, KAEXT_ENOPROTOOPT);
            continue;
        }
        snprintf(what, sizeof what, "%s: apply %d %s via %s", knob_names[k], plan.value[k],
                 kaext_knob_unit(k, mech[k]), mechanism_name(m));
        check(err == 0, what, err, 0);
        err = kaext_read(fd, mech, &st, &step);
        snprintf(what, sizeof what, "%s: read after apply", knob_names[k]);
        check(err == 0, what, err, 0);
        snprintf(what, sizeof what, "%s: SO_KEEPALIVE on after apply", knob_names[k]);
        check(st.keepalive == 1, what, st.keepalive, 1);
        if (m == KAEXT_MECH_SETSOCKOPT) {
            snprintf(what, sizeof what, "%s: reads back %d", knob_names[k], plan.value[k]);
            check((st.have & (1u << k)) && st.value[k] == plan.value[k], what,
                  (st.have & (1u << k)) ? st.value[k] : -1, plan.value[k]);
        } else {
            snprintf(what, sizeof what, "%s: write-only under SIO_KEEPALIVE_VALS", knob_names[k]);
            check(!(st.have & (1u << k)), what, (long long)st.have, 0);
        }
    }
}

static void test_keepalive_flag(kaext_sock fd)
{
    kaext_plan plan;
    kaext_state st;
    int err, step = -1;
    memset(&plan, 0, sizeof plan);
    plan.keepalive = 0;
    err = kaext_apply(fd, &plan, mech, &step);
    check(err == 0, "SO_KEEPALIVE off", err, 0);
    err = kaext_read(fd, mech, &st, &step);
    check(err == 0 && st.keepalive == 0, "SO_KEEPALIVE reads 0 (1-byte or int result)", st.keepalive, 0);
    plan.keepalive = 1;
    err = kaext_apply(fd, &plan, mech, &step);
    check(err == 0, "SO_KEEPALIVE on", err, 0);
    err = kaext_read(fd, mech, &st, &step);
    check(err == 0 && st.keepalive == 1, "SO_KEEPALIVE reads 1", st.keepalive, 1);
}

static void test_not_tcp(void)
{
    kaext_plan plan;
    kaext_state st;
    int err, step = -1, before = -1, after = -1;
    kaext_sock udp = socket(AF_INET, SOCK_DGRAM, IPPROTO_UDP);
    check(!KAEXT_BAD_SOCK(udp), "UDP socket", 0, 0);
    if (KAEXT_BAD_SOCK(udp))
        return;
    kaext_getint(udp, SOL_SOCKET, SO_KEEPALIVE, &before);
    memset(&plan, 0, sizeof plan);
    plan.keepalive = 1;
    err = kaext_apply(udp, &plan, mech, &step);
    check(err != 0 && step == KAEXT_STEP_PROBE, "UDP: SO_KEEPALIVE-only plan refused by the TCP probe",
          step, KAEXT_STEP_PROBE);
    check(err == KAEXT_ENOPROTOOPT || err == KAEXT_EOPNOTSUPP, "UDP: errno ENOPROTOOPT/EOPNOTSUPP",
          err, KAEXT_ENOPROTOOPT);
    kaext_getint(udp, SOL_SOCKET, SO_KEEPALIVE, &after);
    check(before == after, "UDP: SO_KEEPALIVE unchanged", after, before);
    err = kaext_read(udp, mech, &st, &step);
    check(err != 0 && step == KAEXT_STEP_PROBE, "UDP: read refused by the TCP probe", step, KAEXT_STEP_PROBE);
    kaext_close(udp);
}

static void test_closed(void)
{
    kaext_plan plan;
    int err, step = -1;
    kaext_sock s = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    kaext_close(s);
    memset(&plan, 0, sizeof plan);
    plan.keepalive = 1;
    err = kaext_apply(s, &plan, mech, &step);
    check(err == KAEXT_EBADF || err == KAEXT_ENOTSOCK, "closed socket: EBADF/ENOTSOCK", err, KAEXT_EBADF);
}

#if defined(_WIN32)
static void test_sio(kaext_sock fd)
{
    kaext_plan plan;
    kaext_state st;
    int err, step = -1;
    if (mech[KAEXT_IDLE] != KAEXT_MECH_SIO) {
        printf("note TCP_KEEPIDLE accepted: SIO_KEEPALIVE_VALS fallback not in use here\n");
        return;
    }
    check(mech[KAEXT_INTERVAL] == KAEXT_MECH_SIO, "interval follows idle onto SIO",
          mech[KAEXT_INTERVAL], KAEXT_MECH_SIO);
    check(strcmp(kaext_knob_unit(KAEXT_IDLE, mech[KAEXT_IDLE]), "ms") == 0, "SIO unit is ms", 0, 0);
    memset(&plan, 0, sizeof plan);
    plan.set_mask = (1u << KAEXT_IDLE) | (1u << KAEXT_INTERVAL);
    plan.value[KAEXT_IDLE] = 7000;
    plan.value[KAEXT_INTERVAL] = 3000;
    plan.keepalive = 1;
    err = kaext_apply(fd, &plan, mech, &step);
    check(err == 0, "SIO: idle 7000 ms + interval 3000 ms", err, 0);
    err = kaext_read(fd, mech, &st, &step);
    check(err == 0 && st.keepalive == 1, "SIO: SO_KEEPALIVE on", st.keepalive, 1);
    check(!(st.have & 3u), "SIO: idle/interval read back as unknown", (long long)st.have, 0);
    plan.value[KAEXT_IDLE] = 0;
    err = kaext_apply(fd, &plan, mech, &step);
    check(err == KAEXT_EINVAL && step == KAEXT_IDLE, "SIO: idle 0 refused (keepalive storm)", err,
          KAEXT_EINVAL);
    /* the raw WSAIoctl, as the shim issues it, accepts the 12-byte struct */
    {
        struct tcp_keepalive ka = {1, 5000, 1000};
        DWORD n = 0;
        int r = WSAIoctl(fd, SIO_KEEPALIVE_VALS, &ka, sizeof ka, NULL, 0, &n, NULL, NULL);
        check(r == 0, "WSAIoctl(SIO_KEEPALIVE_VALS) with the header's constant", r, 0);
    }
    check(mech[KAEXT_COUNT] != KAEXT_MECH_SIO, "count never goes through SIO", 0, 0);
}
#endif

static int hold(int port, int idle_s, int interval_s)
{
    struct sockaddr_in addr;
    kaext_plan plan;
    char buf[64];
    int err, step = -1, k;
    kaext_sock s = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons((unsigned short)port);
    if (KAEXT_BAD_SOCK(s) || connect(s, (struct sockaddr *)&addr, (kaext_optlen)sizeof addr) != 0) {
        printf("FAIL connect to port %d: %d\n", port, kaext_last_error());
        return 1;
    }
    memset(&plan, 0, sizeof plan);
    plan.set_mask = (1u << KAEXT_IDLE) | (1u << KAEXT_INTERVAL);
    plan.keepalive = 1;
    for (k = KAEXT_IDLE; k <= KAEXT_INTERVAL; k++) {
        int seconds = k == KAEXT_IDLE ? idle_s : interval_s;
        plan.value[k] = strcmp(kaext_knob_unit(k, mech[k]), "ms") == 0 ? seconds * 1000 : seconds;
    }
    err = kaext_apply(s, &plan, mech, &step);
    if (err) {
        printf("FAIL apply: errno %d at step %d\n", err, step);
        return 1;
    }
    printf("applied mechanism=%s idle=%d interval=%d unit=%s\n",
           mechanism_name(mech[KAEXT_IDLE]), plan.value[KAEXT_IDLE],
           plan.value[KAEXT_INTERVAL], kaext_knob_unit(KAEXT_IDLE, mech[KAEXT_IDLE]));
    fflush(stdout);
    while (recv(s, buf, (int)sizeof buf, 0) > 0)
        ;
    kaext_close(s);
    return 0;
}

int main(int argc, char **argv)
{
    kaext_sock client, server;
#if defined(_WIN32)
    WSADATA wsa;
    if (WSAStartup(MAKEWORD(2, 2), &wsa) != 0) {
        printf("FAIL WSAStartup\n");
        return 2;
    }
#endif
    kaext_probe_mechanisms(mech);
    if (argc == 5 && strcmp(argv[1], "hold") == 0)
        return hold(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
    if (argc != 1) {
        fprintf(stderr, "usage: %s [hold PORT IDLE_S INTERVAL_S]\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IONBF, 0);
    print_tables();
    if (loopback_pair(&client, &server) != 0) {
        printf("FAIL loopback pair: %d\n", kaext_last_error());
        return 1;
    }
    test_knobs(client);
    test_keepalive_flag(server);
#if defined(_WIN32)
    test_sio(client);
#endif
    test_not_tcp();
    test_closed();
    kaext_close(client);
    kaext_close(server);
    printf("summary checks=%d failed=%d\n", checks, failures);
    return failures ? 1 : 0;
}
