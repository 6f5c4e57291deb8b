#!/usr/bin/env bash
# A Debian 12 root to install bpfsnap's package into, or to build it in, cached:
#
#   tools/debroot.sh DIR [install|build [HOST_ARCH]]   (as root; prints how long it took when it builds)
#
# install (the default): debootstrap --variant=minbase bookworm, plus systemd
# (so that the installed units can be checked with the root's own
# systemd-analyze and systemctl, and the root booted with systemd-nspawn -b,
# as a real system), with apt's package lists and the archives of what the
# package may need beyond minbase (libelf1), so that `apt-get install
# ./bpfsnap_*.deb` in a copy of it resolves the package's Depends as on a
# real system, without the network.
#
# build: the same with build-essential, debhelper, lintian and debian/control's
# Build-Depends (`apt-get build-dep`), where tools/deb.sh runs
# dpkg-buildpackage (Rust comes from the machine's toolchain, mounted
# read-only: bookworm's rustc 1.63 is older than Cargo.toml's rust-version).
# With HOST_ARCH (a Debian architecture, e.g. arm64) the root cross-builds,
# as Debian does: HOST_ARCH added to dpkg's architectures,
# crossbuild-essential-HOST_ARCH (the cross gcc and binutils), and the
# Build-Depends resolved for it (`apt-get build-dep -a HOST_ARCH`: the
# libraries as HOST_ARCH multiarch packages, the tools marked :native for
# the root's own). Tests copy it and throw the copy away:
# DIR itself is never changed after it is made. It is made again when this
# script changes (its hash is in DIR/.made-by). Mounts nothing of the host's:
# debootstrap and apt run in a mount namespace of their own.
set -euo pipefail

dir=$1
kind=${2:-install}
host_arch=${3:-}
say() { echo "debroot: $*" >&2; }
root=$(cd "$(dirname "$0")/.." && pwd)
extra=
control=
build_depends=
case $kind in
  install) ;;
  build)
    extra="build-essential debhelper lintian${host_arch:+ crossbuild-essential-$host_arch}"
    control=$(cat "$root/debian/control")
    build_depends=$(sed -n '/^Build-Depends:/,/^[^ ]/p' "$root/debian/control") ;;
  *) echo "usage: tools/debroot.sh DIR [install|build [HOST_ARCH]]" >&2; exit 2 ;;
esac
stamp=$( (cat "$0"; echo "$extra $host_arch"; echo "$build_depends") | sha256sum | cut -d' ' -f1)
[[ $(cat "$dir/.made-by" 2>/dev/null) == "$stamp" ]] && exit 0

command -v debootstrap >/dev/null || { say "debootstrap is missing (make deps installs it)"; exit 1; }
# The machine's Debian mirror, as apt has it configured.
mirror=$(apt-get indextargets --format '$(REPO_URI)' 'Codename: bookworm' 'Created-By: Packages' 2>/dev/null |
  grep -v security | head -1 || true)
mirror=${mirror:-http://deb.debian.org/debian/}

start=$(date +%s)
say "making $dir: debootstrap --variant=minbase --include=systemd bookworm${extra:+ plus $extra and the Build-Depends${host_arch:+ for $host_arch}} from $mirror (once; cached)"
rm -rf "$dir.new"
mkdir -p "$(dirname "$dir")"
log=$dir.log
unshare --mount --propagation private bash -euo pipefail -c '
  new=$1 mirror=$2 extra=$3 host_arch=$4 control=$5
  debootstrap --variant=minbase --include=systemd bookworm "$new" "$mirror"
  # apt in the root needs /proc and /dev/null.
  mount -t proc proc "$new/proc"
  mount --bind /dev "$new/dev"
  chroot "$new" apt-get clean  # what debootstrap downloaded: installed already
  if [ -n "$host_arch" ]; then chroot "$new" dpkg --add-architecture "$host_arch"; fi
  chroot "$new" apt-get -qq update
  chroot "$new" apt-get -qq install --download-only --no-install-recommends libelf1
  # (debootstrap --include of these fails configuring them in its own order)
  if [ -n "$extra" ]; then
    chroot "$new" env DEBIAN_FRONTEND=noninteractive apt-get -qq install --no-install-recommends $extra
  fi
  if [ -n "$control" ]; then
    mkdir -p "$new/tmp/source/debian"
    printf "%s\n" "$control" > "$new/tmp/source/debian/control"
    chroot "$new" env DEBIAN_FRONTEND=noninteractive apt-get -qq build-dep --no-install-recommends \
      ${host_arch:+-a "$host_arch"} /tmp/source
    rm -r "$new/tmp/source"
  fi
' debroot "$dir.new" "$mirror" "$extra" "$host_arch" "$control" > "$log" 2>&1 || { tail -20 "$log" >&2; say "failed (whole output: $log)"; exit 1; }
echo "$stamp" > "$dir.new/.made-by"
rm -rf "$dir"
mv "$dir.new" "$dir"
say "made $dir in $(($(date +%s) - start)) s"
