#!/usr/bin/env bash
# Builds bpfsnap's Debian package from this source tree, with its debian/
# directory, as a Debian build does: `dpkg-buildpackage -us -uc -b` in a
# Debian 12 root (tools/debroot.sh DIR build: build-essential, debhelper,
# lintian and debian/control's Build-Depends; cached), then lintian:
#
#   tools/deb.sh OUTDIR [ARCH]  (as root; prints the path of OUTDIR/bpfsnap_VERSION_ARCH.deb)
#
# ARCH is the package's Debian architecture, this machine's by default. Another
# one (arm64 on amd64: `make deb ARCH=arm64`) is a Debian cross build,
# `dpkg-buildpackage -a ARCH` in a root of its own (tools/debroot.sh DIR
# build ARCH: crossbuild-essential-ARCH and the Build-Depends for ARCH);
# debian/rules takes cargo's target from DEB_HOST_GNU_TYPE, and this
# machine's Rust must have that target's standard library (`make deps
# ARCH=arm64` adds it).
# `make deb` runs it, tests/package.rs too. The root is never changed: the
# build runs on an overlay of it that dies with the build's mount namespace.
# What goes in: the tree's files that git tracks or would track (uncommitted
# changes included; without git, the tree but target/), copied to
# /build/bpfsnap. Rust is this machine's toolchain (`rustc --print sysroot`),
# mounted read-only at the same path (bookworm's rustc 1.63 is older than Cargo.toml's
# rust-version), and crates come from cargo's registry cache without the
# network (CARGO_NET_OFFLINE; Cargo.lock is followed). cargo's output is kept
# between builds in target/debroot/cargo-target, seen at the same path
# (/build/target) by every build, so a rebuild compiles only what changed
# and gives the same binary.
#
# DEB_BUILD_OPTIONS: dpkg-buildpackage's (default nocheck: `make test` runs
# the tests; noopt for an unoptimised binary); noddebs is always added (one
# package, as before: no -dbgsym). DEB_LINTIAN=0 skips lintian, which
# otherwise fails the build on an error or a warning it does not have an
# override for (debian/bpfsnap.lintian-overrides says why each is there).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out=$1
say() { echo "deb: $*" >&2; }
[[ $(id -u) == 0 ]] || { say "run as root (chroot, mounts)"; exit 1; }
build_arch=$(dpkg --print-architecture)
arch=${2:-$build_arch}
case $arch in
  amd64) triple=x86_64-unknown-linux-gnu ;;
  arm64) triple=aarch64-unknown-linux-gnu ;;
  *) say "no package for $arch: bpfsnap builds for amd64 and arm64"; exit 2 ;;
esac

sysroot=$(rustc --print sysroot)
cargo_home=${CARGO_HOME:-$HOME/.cargo}
[[ -x $sysroot/bin/cargo && -d $cargo_home/registry ]] || { say "no cargo in $sysroot or no registry in $cargo_home"; exit 1; }
[[ -d $sysroot/lib/rustlib/$triple ]] ||
  { say "Rust in $sysroot has no $triple standard library: make deps ARCH=$arch (rustup target add $triple)"; exit 1; }
cache=$root/target/debroot/bookworm-build
cross=
if [[ $arch != "$build_arch" ]]; then
  cache+=-$arch
  cross="-a $arch"
fi
"$root/tools/debroot.sh" "$cache" build ${cross:+"$arch"}
# The crates Cargo.lock names, in the registry cache (offline from here on).
(cd "$root" && cargo fetch --quiet --locked --target "$triple")

mkdir -p "$out" "$root/target/debroot/cargo-target"
work=$(mktemp -d "$root/target/debroot/build.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The source, as it would be exported.
mkdir -p "$work/source"
if git -C "$root" rev-parse --git-dir >/dev/null 2>&1; then
  (cd "$root" && git ls-files -z --cached --others --exclude-standard |
    python3 -c 'import os, sys; sys.stdout.write("".join(p + "\0" for p in sys.stdin.read().split("\0") if p and os.path.lexists(p)))' |
    tar --null -T - -cf -) | tar -xf - -C "$work/source"
  revision=$(git -C "$root" rev-parse --short=12 HEAD)
  git -C "$root" diff --quiet HEAD 2>/dev/null || revision+=-dirty
else
  tar -C "$root" --exclude=./target -cf - . | tar -xf - -C "$work/source"
  revision=unknown
fi

log=$work/build.log
mkdir -p "$work/upper" "$work/overlay" "$work/merged"
if ! unshare --mount --propagation private bash -euo pipefail -c '
  cache=$1 work=$2 sysroot=$3 cargo_home=$4 target=$5
  R=$work/merged
  mount -t overlay overlay -o "lowerdir=$cache,upperdir=$work/upper,workdir=$work/overlay" "$R"
  # The toolchain and cargo'"'"'s home at the paths they have here.
  mkdir -p "$R/build/bpfsnap" "$R/build/target" "$R$sysroot" "$R$cargo_home"
  mount --bind "$work/source" "$R/build/bpfsnap"
  mount --bind "$target" "$R/build/target"
  mount --bind "$sysroot" "$R$sysroot"
  mount -o remount,bind,ro "$R$sysroot"
  mount --bind "$cargo_home" "$R$cargo_home"
  mount -t proc proc "$R/proc"
  mount --rbind /dev "$R/dev"
  mount -t tmpfs tmpfs "$R/tmp"
  chroot "$R" env -i \
    PATH="$sysroot/bin:/usr/sbin:/usr/bin:/sbin:/bin" HOME=/root LANG=C.UTF-8 \
    CARGO_HOME="$cargo_home" CARGO_TARGET_DIR=/build/target CARGO_NET_OFFLINE=true \
    BPFSNAP_REVISION="$6" DEB_BUILD_OPTIONS="$7" \
    sh -ec "cd /build/bpfsnap && dpkg-buildpackage -us -uc -b $9"
  cp "$R"/build/bpfsnap_*.deb "$R"/build/bpfsnap_*.changes "$R"/build/bpfsnap_*.buildinfo "$work/"
  if [ "$8" != 0 ]; then
    # (as nobody: lintian warns it should not run as root)
    chroot --userspec=nobody:nogroup "$R" env -i PATH=/usr/bin:/bin HOME=/tmp LANG=C.UTF-8 \
      sh -c "lintian --fail-on error,warning --display-info /build/bpfsnap_*.changes"
  fi
' deb "$cache" "$work" "$sysroot" "$cargo_home" "$root/target/debroot/cargo-target" \
  "$revision" "${DEB_BUILD_OPTIONS:-nocheck} noddebs" "${DEB_LINTIAN:-1}" "$cross" > "$log" 2>&1; then
  tail -40 "$log" >&2
  cp "$log" "$out/build.log"
  say "failed (whole output: $out/build.log)"
  exit 1
fi
grep -E '^[EWI]: |^N: [0-9]+ hints? overridden|lintian' "$log" | grep -v '^dpkg' >&2 || true
debs=("$work"/bpfsnap_*.deb)
[[ -f ${debs[0]} ]] || { say "dpkg-buildpackage wrote no .deb"; exit 1; }
cp "${debs[0]}" "$out/"
echo "$out/$(basename "${debs[0]}")"
