#!/usr/bin/env bash
# The root file system of bpfsnap's container image: the binary and exactly
# the libraries it links (libelf, zlib, libgcc_s, libc and the dynamic
# loader: the ldd closure), at the paths ldd resolves them to, plus the
# empty directories bpfsnap writes in (/run/lock for its lock, /tmp).
#
#   tools/image-root.sh BINARY DEST     (DEST/rootfs is made afresh)
#
# The Dockerfile's build stage runs it on the release build; tests/container.rs
# on the test build, to build the runtime stage from it without a Rust image.
set -euo pipefail

binary=$1
rootfs=$2/rootfs
rm -rf "$rootfs"
install -D -m 0755 "$binary" "$rootfs/usr/bin/bpfsnap"

# `libelf.so.1 => /lib/x86_64-linux-gnu/libelf.so.1 (0x...)` and the loader
# (`/lib64/ld-linux-x86-64.so.2 (0x...)`); linux-vdso is the kernel's.
libraries=$(ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}')
[[ -n $libraries ]] || { echo "image-root: ldd found no library for $binary" >&2; exit 1; }
for library in $libraries; do
  # The file itself, not the symlink ldd names (cp -L), at the name ldd uses.
  install -D -m 0755 "$(readlink -f "$library")" "$rootfs$library"
done

install -d -m 1777 "$rootfs/run/lock" "$rootfs/tmp"
