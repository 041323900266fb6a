#!/usr/bin/env bash
# Build the C extension with AddressSanitizer + UndefinedBehaviorSanitizer and run
# the test suite against that build.  Exits non-zero on any test failure and on any
# sanitizer report, also one from a subprocess a test started.
#
#   tools/sanitizers.sh                  # API, fuzz, thread, error, policy ... tests
#   tools/sanitizers.sh tests/unit/test_fuzz.py -x    # any pytest arguments instead
#   KAEXT_SAN_KEEP=1 tools/sanitizers.sh # keep the build directory and the logs
#
# How
# - The source tree (tracked and untracked, not ignored files) is copied to a temporary
#   directory and installed there, with pip, into a temporary venv: the development
#   build in src/kaext is never touched.  Needs gcc with libasan/libubsan (Debian:
#   gcc; the packages are in .ci/apt-packages.txt) and PyPI for Cython, setuptools,
#   pytest and hypothesis.
# - CFLAGS/LDFLAGS: -fsanitize=address,undefined -fno-omit-frame-pointer
#   -fno-sanitize-recover=undefined (every UB report is fatal, not just printed), and
#   KAEXT_DEBUG=1 (setup.py's debug build: -g -O0, not stripped) for readable reports.
#   The script checks that the built module really calls into both runtimes
#   (__asan_report_*, __ubsan_handle_*), so a build that silently dropped the flags fails.
# - The interpreter is not instrumented, so the ASan runtime is preloaded
#   (LD_PRELOAD=libasan.so libubsan.so, as gcc -print-file-name finds them).
# - PYTHONMALLOC=malloc: every Python object comes from malloc, so ASan sees a
#   use-after-free or an overflow of a Python object that the extension got wrong
#   (refcounting), not only of its own C buffers.
# - ASAN_OPTIONS=detect_leaks=0: CPython does not free everything at exit (interned
#   strings, static types, module state), and LeakSanitizer would report all of that.
#   Leaks are checked by tools/leakcheck.py instead: flat RSS/tracemalloc over a
#   million calls, and valgrind memcheck filtered for definite leaks in the extension.
# - Reports go to log files (log_path), which are printed and counted at the end: a
#   report in a subprocess whose exit status a test ignores still fails the run.
# - By default the tests that need network namespaces (test_dead_peer.py), real
#   framework servers (test_frameworks.py) or that build wheels (test_packaging.py)
#   are left out: they are slow and run the same C calls as the API tests, which all
#   run here.  test_shim_c.py is left out too: it cross-compiles the shim and runs it
#   under wine, programs that the preloaded ASan runtime would only disturb; it does
#   not load the extension.  test_inject_libraries.py (third-party libraries, as
#   test_frameworks.py) and test_run.py (programs under kaext.run and its preload
#   library, in subprocesses) are left out for the same reasons; test_inject.py runs.
#   test_adapters.py (requests, httpx, tinyproxy) and test_readme.py (its examples use
#   requests, httpx, openai and botocore) need the test extra's libraries, which this
#   venv does not install: both run in the main suite.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
start=$(date +%s)
say() { printf '\n-- [%3ss] %s\n' "$(( $(date +%s) - start ))" "$*"; }

PYTHON=${PYTHON:-python3}
CC=${CC:-gcc}
W=$(mktemp -d "${TMPDIR:-/tmp}/kaext-san.XXXXXX")
if [ "${KAEXT_SAN_KEEP:-0}" = 1 ]; then
  echo "keeping $W"
else
  trap 'rm -rf "$W"' EXIT
fi

LIBASAN=$("$CC" -print-file-name=libasan.so)
LIBUBSAN=$("$CC" -print-file-name=libubsan.so)
for lib in "$LIBASAN" "$LIBUBSAN"; do
  [ -e "$lib" ] || { echo "sanitizer runtime not found: $lib (install gcc / libasan / libubsan)" >&2; exit 2; }
done

say "copy the tree to $W/src"
mkdir -p "$W/src" "$W/logs"
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git -C "$ROOT" ls-files -z --cached --others --exclude-standard \
    | (cd "$ROOT" && xargs -0 tar -cf - --ignore-failed-read 2>/dev/null) | tar -xf - -C "$W/src"
else
  tar -C "$ROOT" --exclude=build --exclude='*.so' --exclude=.venv -cf - . | tar -xf - -C "$W/src"
fi
rm -f "$W/src/ext/_kaext.c" "$W"/src/src/kaext/_kaext*.so

say "venv with $("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
"$PYTHON" -m venv "$W/venv"
VPY="$W/venv/bin/python"
"$VPY" -m pip install -q "setuptools>=77" "Cython>=3.1" "pytest>=7" "hypothesis>=6" "prometheus_client>=0.20" "pyyaml>=6"

say "build with -fsanitize=address,undefined"
SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
(
  cd "$W/src"
  KAEXT_DEBUG=1 CC="$CC" CFLAGS="$SAN -O1 -g" LDFLAGS="$SAN" \
    "$VPY" -m pip install -q --no-build-isolation --no-cache-dir .
)
# (not imported here: an ASan-built module only loads with the runtime preloaded)
SO=$(find "$W/venv" -name '_kaext*.so' | head -n 1)
[ -n "$SO" ] || { echo "the extension was not built" >&2; exit 1; }
echo "built $SO"
undefined=$(nm -D --undefined-only "$SO")
grep -q '__asan_report' <<<"$undefined" || { echo "the module is not instrumented by ASan" >&2; exit 1; }
grep -q '__ubsan_handle' <<<"$undefined" || { echo "the module is not instrumented by UBSan" >&2; exit 1; }

if [ "$#" -gt 0 ]; then
  args=("$@")
else
  args=(tests --ignore=tests/integration/test_dead_peer.py --ignore=tests/integration/test_frameworks.py
        --ignore=tests/package/test_packaging.py --ignore=tests/native/test_shim_c.py
        --ignore=tests/integration/test_inject_libraries.py --ignore=tests/integration/test_inject_green.py --ignore=tests/integration/test_clients.py --ignore=tests/integration/test_client_matrix.py --ignore=tests/integration/test_run.py
        --ignore=tests/integration/test_adapters.py --ignore=tests/documentation/test_readme.py
        --ignore=tests/integration/test_testing_kit.py)  # the kit: Python and nft, its clients in the main suite
fi

say "pytest ${args[*]} under ASan + UBSan"
status=0
(
  cd "$W/src"
  export LD_PRELOAD="$LIBASAN $LIBUBSAN"
  export PYTHONMALLOC=malloc
  export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:strict_string_checks=1:check_initialization_order=1:detect_stack_use_after_return=1:log_path=$W/logs/asan"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$W/logs/ubsan"
  export KAEXT_REQUIRE_EXTENSION=1
  # -p no:cacheprovider: the copy is thrown away anyway
  "$VPY" -m pytest -q -p no:cacheprovider "${args[@]}"
) || status=$?

reports=$(find "$W/logs" -type f | sort)
if [ -n "$reports" ]; then
  say "sanitizer reports"
  for f in $reports; do
    echo "== $f"
    cat "$f"
  done
  echo "FAILED: $(wc -l <<<"$reports") sanitizer report file(s)" >&2
  exit 1
fi
if [ "$status" -ne 0 ]; then
  echo "FAILED: pytest exited with $status under the sanitizers" >&2
  exit "$status"
fi
say "clean: no ASan/UBSan report, all tests passed"
