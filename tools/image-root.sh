#!/usr/bin/env bash
# The root file system of bpfsnap's container image: the binary and exactly
# the libraries it links (libelf, zlib, libgcc_s, libc and the dynamic
# loader: the ldd closure, of the binary's architecture: amd64 or arm64), at
# the paths ldd resolves them to, plus the empty directories bpfsnap writes
# in (/run/lock for its lock, /tmp).
#
#   tools/image-root.sh BINARY DEST     (DEST/rootfs is made afresh; DEST/arch
#                                        says the binary's architecture: amd64, arm64)
#
# The Dockerfile's build stage runs it on the release build; tools/image.sh
# (`make image`, tests/container.rs) on a build of this machine, to build the
# runtime stage from it without a Rust image.
set -euo pipefail

binary=$1
rootfs=$2/rootfs
rm -rf "$rootfs"
install -D -m 0755 "$binary" "$rootfs/usr/bin/bpfsnap"

# The libraries it links, found as the dynamic loader finds them but without
# running the binary, which may be another architecture's (the arm64 image
# is built on amd64): its program interpreter (PT_INTERP) and the closure of
# its DT_NEEDED, each looked up in the multiarch directories of the binary's
# architecture (/lib/aarch64-linux-gnu: the arm64 multiarch packages that
# `make deps ARCH=arm64` installs), at the path ldd would name.
fail() { echo "image-root: $*" >&2; exit 1; }
machine=$(readelf -h "$binary" 2>/dev/null | sed -n 's/^ *Machine: *//p') || true
case $machine in
  *X86-64) multiarch=x86_64-linux-gnu arch=amd64 ;;
  AArch64) multiarch=aarch64-linux-gnu arch=arm64 ;;
  *) fail "$binary is not an x86-64 or AArch64 ELF executable (readelf: ${machine:-no ELF header})" ;;
esac
interpreter=$(readelf -l "$binary" | sed -n 's/.*Requesting program interpreter: \(.*\)]$/\1/p')
[[ -n $interpreter ]] || fail "$binary names no program interpreter (not dynamically linked)"
needed() { readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p'; }
libraries=("$interpreter")
seen=" ${interpreter##*/} "
mapfile -t queue < <(needed "$binary")
while ((${#queue[@]})); do
  name=${queue[0]}
  queue=("${queue[@]:1}")
  [[ $seen == *" $name "* ]] && continue
  seen+="$name "
  path=
  for dir in "/lib/$multiarch" "/usr/lib/$multiarch"; do
    [[ -e $dir/$name ]] && { path=$dir/$name; break; }
  done
  [[ -n $path ]] || fail "$binary needs $name, which is in neither /lib/$multiarch nor /usr/lib/$multiarch (for arm64: make deps ARCH=arm64)"
  libraries+=("$path")
  mapfile -t -O "${#queue[@]}" queue < <(needed "$path")
done
for library in "${libraries[@]}"; do
  # The file itself, not the symlink ldd names (cp -L), at the name ldd uses.
  install -D -m 0755 "$(readlink -f "$library")" "$rootfs$library"
done

install -d -m 1777 "$rootfs/run/lock" "$rootfs/tmp"
echo "$arch" > "$2/arch"
