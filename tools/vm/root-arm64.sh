#!/usr/bin/env bash
# Builds the small arm64 Debian root the arm64 legs of the kernel matrix boot
# (tools/vm/boot.sh, kernels named *-arm64): an x86_64 host's own root cannot
# run in an arm64 guest, so the guest gets this one instead (boot.sh makes
# a raw ext4 image of it, attached as virtio-blk). Cached: built once per machine, into
# $BPFSNAP_VM_DIR/arm64-root/ (default target/vm), and built again only when
# the package list or suite below changes (the stamp records them).
#
#   tools/vm/root-arm64.sh          prints the path of the root's tree
#
# mmdebstrap runs the arm64 packages' maintainer scripts through qemu-user
# (qemu-user-static, registered with binfmt_misc by tools/deps.sh: its test
# set on x86_64, or BPFSNAP_ARCH=aarch64). The packages come from Debian's
# registry, the mirror the machine's apt sources name.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
vm_dir=${BPFSNAP_VM_DIR:-$root/target/vm}
dir=$vm_dir/arm64-root
say() { echo "vm-root-arm64: $*" >&2; }

# Debian 12, as the host: the test binaries are linked by Debian 12's cross
# toolchain (glibc 2.36).
suite=bookworm
# What the suite's tests run inside the guest (the x86 guests get these from
# the host's root): a shell, mount/losetup/unshare/setpriv (util-linux,
# mount), ip and tc (iproute2), ps and sysctl (procps), curl (serve),
# modprobe (kmod), mkfs.ext4 (e2fsprogs), bpftool, gzip, find; cc with
# <sys/sdt.h> (tests/attach_types compiles its uprobe/USDT target in the
# guest); busybox-static for the guest's initramfs (boot.sh), which loads the
# modules the root is mounted with; promtool and node_exporter (prometheus,
# prometheus-node-exporter), which the tests check bpfsnap's output with.
packages=(
  bash util-linux mount iproute2 procps curl ca-certificates kmod e2fsprogs
  bpftool gzip findutils coreutils grep sed gawk
  gcc libc6-dev systemtap-sdt-dev busybox-static
  prometheus prometheus-node-exporter
)
stamp="$suite ${packages[*]}"

if [[ -d $dir/tree && $(cat "$dir/stamp" 2>/dev/null) == "$stamp" ]]; then
  echo "$dir/tree"
  exit 0
fi
command -v mmdebstrap > /dev/null || { say "mmdebstrap is missing (make test-deps installs it)"; exit 1; }
[[ -e /usr/libexec/qemu-binfmt/aarch64-binfmt-P || -x /usr/bin/qemu-aarch64-static ]] ||
  { say "qemu-user-static is missing (make test-deps installs it)"; exit 1; }

# arm64 executables run here through qemu-user: tools/deps.sh registers
# qemu-aarch64 with binfmt_misc (make vm-test-arm64 runs it first).
[[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]] ||
  { say "qemu-aarch64 is not registered with binfmt_misc: run make test-deps (tools/deps.sh test registers it)"; exit 1; }

# mirror(): the machine's Debian mirror.
source "$root/tools/debian-mirror.sh"

mkdir -p "$dir"
rm -rf --one-file-system "$dir/stamp" "$dir/tree" "$dir/tree.new"
say "building a Debian $suite arm64 root ($dir/tree): ${packages[*]}"
start=$(date +%s)
include=$(IFS=,; echo "${packages[*]}")
mmdebstrap --quiet --architectures=arm64 --variant=minbase --include="$include" \
  --customize-hook='echo bpfsnap-arm64 > "$1/etc/hostname"' \
  --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*' \
  "$suite" "$dir/tree.new" "$(mirror)" >&2
mv "$dir/tree.new" "$dir/tree"
echo "$stamp" > "$dir/stamp"
say "built in $(($(date +%s) - start)) s"
echo "$dir/tree"
