# shellcheck shell=bash
# Sourced by the steps that run kaext in a real system (60-nspawn.sh, 61-podman.sh): a
# minimal Debian bookworm made by debootstrap from the Debian mirror, with systemd, and kaext
# (the metrics extra) installed from a wheel built here from this tree, in a venv at
# /opt/kaext with its commands in /usr/local/bin.  Made once per CI run: in $KAEXT_CI_TMP
# when .ci/run set it (the next step finds it there), else in a directory of this step's own,
# removed when it exits (its EXIT trap: rm -rf "${CI_OWN_TMP:-/nonexistent}").  About 2.5 minutes to make (debootstrap), 20 s to install kaext.
#
#   . .ci/lib/rootfs.sh; rootfs=$(kaext_rootfs)    # the wheels it installed: $ROOTFS_WHEELS

DEBIAN_SUITE=bookworm
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
ROOTFS_PACKAGES=systemd,systemd-sysv,dbus,python3,python3-venv,curl

if [ -z "${KAEXT_CI_TMP:-}" ]; then
  KAEXT_CI_TMP=$(mktemp -d /var/tmp/kaext-ci.XXXXXX)
  export CI_OWN_TMP=$KAEXT_CI_TMP   # the sourcing step removes it when it exits
fi

# The wheels installed in the root file system (kaext's, and those of its metrics extra).
ROOTFS_WHEELS="$KAEXT_CI_TMP/wheels"

# A Python on this machine of the rootfs's own version (the wheel is built for it).
_kaext_python_like() {
  local want=$1 py
  for py in python "python$want" "/usr/bin/python$want" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$want".*/bin/python3; do
    command -v "$py" >/dev/null 2>&1 || [ -x "$py" ] || continue
    if [ "$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$want" ]; then
      echo "$py"
      return 0
    fi
  done
  return 1
}

kaext_rootfs() {
  local root="$KAEXT_CI_TMP/rootfs" wheels="$ROOTFS_WHEELS" src want py wheel exec
  if [ -e "$root/.kaext-ready" ]; then
    echo "$root"
    return 0
  fi
  rm -rf "$root" "$wheels"
  echo "debootstrap $DEBIAN_SUITE into $root" >&2
  debootstrap --variant=minbase --include="$ROOTFS_PACKAGES" \
    "$DEBIAN_SUITE" "$root" "$DEBIAN_MIRROR" >"$KAEXT_CI_TMP/debootstrap.log" 2>&1 \
    || { tail -30 "$KAEXT_CI_TMP/debootstrap.log" >&2; return 1; }
  want=$(chroot "$root" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  py=$(_kaext_python_like "$want") || { echo "no Python $want here to build the wheel for the rootfs" >&2; return 1; }
  echo "the wheel, from a clean copy of HEAD, with $py (Python $want, the rootfs's)" >&2
  src="$KAEXT_CI_TMP/src"
  rm -rf "$src" && mkdir -p "$src" "$wheels"
  git archive --format=tar HEAD | tar -x -C "$src"
  KAEXT_REQUIRE_EXTENSION=1 "$py" -m pip wheel -q --no-deps -w "$wheels" "$src" >"$KAEXT_CI_TMP/wheel.log" 2>&1 \
    || { tail -30 "$KAEXT_CI_TMP/wheel.log" >&2; return 1; }
  wheel=$(ls "$wheels"/kaext-*.whl)
  "$py" -m pip download -q --only-binary :all: -d "$wheels" "kaext[metrics] @ file://$wheel" >"$KAEXT_CI_TMP/download.log" 2>&1 \
    || { tail -30 "$KAEXT_CI_TMP/download.log" >&2; return 1; }
  # installed offline, from those wheels only
  mkdir -p "$root/wheels"
  cp "$wheels"/*.whl "$root/wheels/"
  # shellcheck disable=SC2016  # expanded in the container
  systemd-nspawn -D "$root" --register=no --keep-unit --quiet --pipe /bin/sh -c 'python3 -m venv /opt/kaext \
    && /opt/kaext/bin/pip install -q --no-index --find-links /wheels "kaext[metrics]" \
    && for c in kaext kaext-inspect kaext-enforce kaext-verify kaext-run kaext-probe; do
         ln -sf "/opt/kaext/bin/$c" "/usr/local/bin/$c"; done' </dev/null >&2 || return 1
  # the exporter unit's ExecStart names the command where the unit expects it
  exec=$(sed -n 's/^ExecStart=[-@:+!]*\([^ ]*\).*/\1/p' deploy/kaext-exporter.service | head -1)
  if [ -n "$exec" ] && [ ! -e "$root$exec" ]; then
    mkdir -p "$root$(dirname "$exec")"
    ln -s "/opt/kaext/bin/$(basename "$exec")" "$root$exec"
  fi
  touch "$root/.kaext-ready"
  echo "$root"
}
