/*
 * shim_facts.c -- what kaext_shim.h picks on a target, for the preprocessor.
 *
 * Not a program: tests/native/test_cross_targets.py runs it through a cross
 * compiler's preprocessor (-E) against the target's own headers and reads
 * the "kaext_fact" lines, then checks them against tests/data.
 *
 *   kaext_fact knob <k> <have> <optname> <option name> <unit>
 *   kaext_fact value "<name>" <expression>
 *
 * The constants table (kaext_constants[]) is read from the same output.
 */
#include "kaext_shim.h"
#if defined(__NetBSD__)
#  include <sys/protosw.h> /* PR_SLOWHZ: the unit of TCP_KEEPIDLE/TCP_KEEPINTVL there */
#endif

kaext_fact knob idle KAEXT_HAVE_IDLE KAEXT_IDLE_OPT KAEXT_IDLE_NAME KAEXT_IDLE_UNIT
kaext_fact knob interval KAEXT_HAVE_INTERVAL KAEXT_INTERVAL_OPT KAEXT_INTERVAL_NAME KAEXT_INTERVAL_UNIT
kaext_fact knob count KAEXT_HAVE_COUNT KAEXT_COUNT_OPT KAEXT_COUNT_NAME "probes"
kaext_fact knob user_timeout KAEXT_HAVE_USER_TIMEOUT KAEXT_USER_TIMEOUT_OPT KAEXT_USER_TIMEOUT_NAME KAEXT_USER_TIMEOUT_UNIT
kaext_fact knob connect_timeout KAEXT_HAVE_CONNECT_TIMEOUT KAEXT_CONNECT_TIMEOUT_OPT KAEXT_CONNECT_TIMEOUT_NAME KAEXT_CONNECT_TIMEOUT_UNIT
kaext_fact value "SOL_SOCKET" SOL_SOCKET
kaext_fact value "SO_KEEPALIVE" SO_KEEPALIVE
kaext_fact value "IPPROTO_TCP" IPPROTO_TCP
#if defined(PR_SLOWHZ)
kaext_fact value "PR_SLOWHZ" PR_SLOWHZ
#endif
#if defined(_WIN32)
kaext_fact value "SIO_KEEPALIVE_VALS" KAEXT_V_SIO_KEEPALIVE_VALS
#endif
