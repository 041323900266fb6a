/*
 * test_check.h -- what the shim's C test programs (test_shim.c, test_probe.c) share:
 * one "ok"/"FAIL" line per check, counted, and the names they print.
 * Include after kaext_shim.h.
 */
#ifndef KAEXT_TEST_CHECK_H
#define KAEXT_TEST_CHECK_H

#include <stdio.h>

static int checks, failures;

static void check(int cond, const char *what, long long got, long long want)
{
    checks++;
    if (cond) {
        printf("ok %s\n", what);
    } else {
        failures++;
        printf("FAIL %s: got %lld, want %lld\n", what, got, want);
    }
}

static const char *mechanism_name(int m)
{
    return m == KAEXT_MECH_SETSOCKOPT ? "setsockopt" : m == KAEXT_MECH_SIO ? "sio" : "none";
}

static const char *const knob_names[KAEXT_NKNOBS] = {"idle", "interval", "count", "user_timeout", "connect_timeout"};

#endif /* KAEXT_TEST_CHECK_H */
