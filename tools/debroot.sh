#!/usr/bin/env bash
# A Debian 12 root to install bpfsnap's package into, or to build it in, cached:
#
#   tools/debroot.sh DIR [install|build]   (as root; prints how long it took when it builds)
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
# Build-Depends, where tools/deb.sh runs dpkg-buildpackage (Rust comes from
# the machine's toolchain, mounted read-only: bookworm's rustc 1.63 is older
# than Cargo.toml's rust-version). Tests copy it and throw the copy away:
# DIR itself is never changed after it is made. It is made again when this
# script changes (its hash is in DIR/.made-by). Mounts nothing of the host's:
# debootstrap and apt run in a mount namespace of their own.
set -euo pipefail

dir=$1
kind=${2:-install}
say() { echo "debroot: $*" >&2; }
root=$(cd "$(dirname "$0")/.." && pwd)
extra=
case $kind in
  install) ;;
  # Build-Depends from debian/control (but debhelper-compat, which debhelper is).
  build) extra="build-essential debhelper lintian "$(sed -n '/^Build-Depends:/,/^[^ ]/p' "$root/debian/control" |
    sed 's/^Build-Depends://; /^[^ ]/d' | tr ',' '\n' | sed 's/[[(<].*//; s/ //g; /^$/d; /debhelper-compat/d' | paste -sd' ') ;;
  *) echo "usage: tools/debroot.sh DIR [install|build]" >&2; exit 2 ;;
esac
stamp=$( (cat "$0"; echo "$extra") | sha256sum | cut -d' ' -f1)
[[ $(cat "$dir/.made-by" 2>/dev/null) == "$stamp" ]] && exit 0

command -v debootstrap >/dev/null || { say "debootstrap is missing (make deps installs it)"; exit 1; }
# The machine's Debian mirror, as apt has it configured.
mirror=$(apt-get indextargets --format '$(REPO_URI)' 'Codename: bookworm' 'Created-By: Packages' 2>/dev/null |
  grep -v security | head -1 || true)
mirror=${mirror:-http://deb.debian.org/debian/}

start=$(date +%s)
say "making $dir: debootstrap --variant=minbase --include=systemd bookworm${extra:+ plus $extra} from $mirror (once; cached)"
rm -rf "$dir.new"
mkdir -p "$(dirname "$dir")"
log=$dir.log
unshare --mount --propagation private bash -euo pipefail -c '
  new=$1 mirror=$2 extra=$3
  debootstrap --variant=minbase --include=systemd bookworm "$new" "$mirror"
  # apt in the root needs /proc and /dev/null.
  mount -t proc proc "$new/proc"
  mount --bind /dev "$new/dev"
  chroot "$new" apt-get clean  # what debootstrap downloaded: installed already
  chroot "$new" apt-get -qq update
  chroot "$new" apt-get -qq install --download-only --no-install-recommends libelf1
  # (debootstrap --include of these fails configuring them in its own order)
  if [ -n "$extra" ]; then
    chroot "$new" env DEBIAN_FRONTEND=noninteractive apt-get -qq install --no-install-recommends $extra
  fi
' debroot "$dir.new" "$mirror" "$extra" > "$log" 2>&1 || { tail -20 "$log" >&2; say "failed (whole output: $log)"; exit 1; }
echo "$stamp" > "$dir.new/.made-by"
rm -rf "$dir"
mv "$dir.new" "$dir"
say "made $dir in $(($(date +%s) - start)) s"
