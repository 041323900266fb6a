/*
 * test_probe.c -- the shim's run-time probe and its order of calls, no Python.
 *
 * Built natively and cross-built for Windows (run under wine) by
 * tests/native/test_shim_c.py.  On Windows it does NOT start Winsock itself before
 * the first probe: that is the case of a program (or Python) that uses kaext
 * before anything called WSAStartup, and the probe must still see the running
 * kernel, not assume.
 *
 * Output lines the tests parse:
 *   knob NAME mechanism=setsockopt|sio|none unknown=N
 *   build N                      (Windows: the running build number)
 *   ok ... / FAIL ...
 *   summary checks=N failed=M
 */
#include "kaext_shim.h"
#include "test_check.h"

#include <stdio.h>
#include <string.h>



/* Only "no such option" means unsupported; any other error says nothing. */
static void test_verdict(void)
{
    check(kaext_probe_verdict(0) == 1, "verdict: no error = accepted", kaext_probe_verdict(0), 1);
    check(kaext_probe_verdict(KAEXT_ENOPROTOOPT) == 0, "verdict: ENOPROTOOPT = unsupported",
          kaext_probe_verdict(KAEXT_ENOPROTOOPT), 0);
    check(kaext_probe_verdict(KAEXT_EINVAL) == -1, "verdict: EINVAL = unknown", kaext_probe_verdict(KAEXT_EINVAL), -1);
    check(kaext_probe_verdict(KAEXT_EOPNOTSUPP) == -1, "verdict: EOPNOTSUPP = unknown",
          kaext_probe_verdict(KAEXT_EOPNOTSUPP), -1);
#if defined(_WIN32)
    check(kaext_probe_verdict(WSAENOBUFS) == -1, "verdict: WSAENOBUFS = unknown", kaext_probe_verdict(WSAENOBUFS), -1);
    check(kaext_probe_verdict(WSANOTINITIALISED) == -1, "verdict: WSANOTINITIALISED = unknown",
          kaext_probe_verdict(WSANOTINITIALISED), -1);
#endif
}

#if defined(_WIN32)
/* The build-number fallback (Microsoft: TCP_KEEPIDLE/KEEPINTVL from 1709 =
 * 16299, TCP_KEEPCNT from 1703 = 15063). */
static void test_build_fallback(void)
{
    struct { int k; unsigned long build; int want; } cases[] = {
        {KAEXT_IDLE, 16298, KAEXT_MECH_SIO},      {KAEXT_IDLE, 16299, KAEXT_MECH_SETSOCKOPT},
        {KAEXT_INTERVAL, 15063, KAEXT_MECH_SIO},  {KAEXT_INTERVAL, 22631, KAEXT_MECH_SETSOCKOPT},
        {KAEXT_COUNT, 15062, KAEXT_MECH_NONE},    {KAEXT_COUNT, 15063, KAEXT_MECH_SETSOCKOPT},
        {KAEXT_USER_TIMEOUT, 7601, KAEXT_MECH_SETSOCKOPT},
    };
    size_t i;
    char what[120];
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int got = kaext_mechanism_from_build(cases[i].k, cases[i].build);
        snprintf(what, sizeof what, "build %lu: %s via %s", cases[i].build, knob_names[cases[i].k],
                 mechanism_name(cases[i].want));
        check(got == cases[i].want, what, got, cases[i].want);
    }
    printf("build %lu\n", kaext_windows_build());
    check(kaext_windows_build() > 0, "RtlGetVersion gives a build number", (long long)kaext_windows_build(), 1);
}

/* SIO_KEEPALIVE_VALS turns keepalive on: it must come after the setsockopt
 * knobs, so that a refused TCP_KEEPCNT leaves SO_KEEPALIVE off.  The mechanism
 * array is the caller's: here it says TCP_KEEPCNT is a socket option (as on
 * Windows 1703..1709), and the running kernel (wine) really refuses it. */
static void test_sio_comes_last(const int probed[KAEXT_NKNOBS])
{
    kaext_plan plan;
    int mech[KAEXT_NKNOBS], err, step = -1, on = -1, k;
    kaext_sock s = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    if (probed[KAEXT_IDLE] != KAEXT_MECH_SIO) {
        printf("note TCP_KEEPIDLE accepted here: SIO order not testable\n");
        kaext_close(s);
        return;
    }
    for (k = 0; k < KAEXT_NKNOBS; k++)
        mech[k] = probed[k];
    mech[KAEXT_COUNT] = KAEXT_MECH_SETSOCKOPT;
    memset(&plan, 0, sizeof plan);
    plan.set_mask = (1u << KAEXT_IDLE) | (1u << KAEXT_INTERVAL) | (1u << KAEXT_COUNT);
    plan.value[KAEXT_IDLE] = 7000;
    plan.value[KAEXT_INTERVAL] = 3000;
    plan.value[KAEXT_COUNT] = 4;
    plan.keepalive = 1;
    kaext_setint(s, SOL_SOCKET, SO_KEEPALIVE, 0);
    err = kaext_apply(s, &plan, mech, &step);
    if (err == 0) {
        printf("note this kernel accepts TCP_KEEPCNT: SIO order not testable\n");
        kaext_close(s);
        return;
    }
    check(step == KAEXT_COUNT, "SIO order: TCP_KEEPCNT refused", step, KAEXT_COUNT);
    kaext_getint(s, SOL_SOCKET, SO_KEEPALIVE, &on);
    check(on == 0, "SIO order: keepalive still off after the refusal (no ioctl sent)", on, 0);
    kaext_close(s);
}
#endif

int main(void)
{
    int mech[KAEXT_NKNOBS], unknown, k;
    setvbuf(stdout, NULL, _IONBF, 0);
    /* first thing: probe, before anything started Winsock */
    unknown = kaext_probe_mechanisms(mech);
    for (k = 0; k < KAEXT_NKNOBS; k++)
        printf("knob %s mechanism=%s unknown=%d\n", knob_names[k], mechanism_name(mech[k]), unknown);
    check(unknown == 0, "every probe answered (a socket could be made)", unknown, 0);
    test_verdict();
#if defined(_WIN32)
    test_build_fallback();
    test_sio_comes_last(mech);
#endif
    printf("summary checks=%d failed=%d\n", checks, failures);
    return failures ? 1 : 0;
}
