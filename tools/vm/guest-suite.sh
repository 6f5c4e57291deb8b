#!/usr/bin/env bash
# Runs inside a VM of the kernel matrix (tools/vm/matrix.sh boots it):
#   guest-suite.sh SUITE_FILE KERNEL_NAME MIN_BUILTINS
# Each line of SUITE_FILE is a test binary built on the host with its
# libtest arguments. Kernel tests must run here: none may skip
# (BPFSNAP_REQUIRE_KERNEL_TESTS), and tests of kernel features this host
# lacks (kprobes, fentry) know from BPFSNAP_KERNEL_MATRIX that they must run.
# Exits non-zero if any binary failed.
set -uo pipefail

suite=$1
export BPFSNAP_REQUIRE_KERNEL_TESTS=1 BPFSNAP_KERNEL_MATRIX=$2 BPFSNAP_MIN_BUILTINS=$3
echo "kernel $(uname -r), lockdown $(cat /sys/kernel/security/lockdown 2>/dev/null || echo none)," \
  "kernel.unprivileged_bpf_disabled=$(cat /proc/sys/kernel/unprivileged_bpf_disabled)"

# What a Debian system has and virtme-ng's minimal init does not set up; a
# step that fails ends the suite (the tests would fail less clearly).
setup() {
  mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf || return
  mkdir -p /run/lock && chmod 1777 /run/lock || return
  ip link set lo up || return
  # Temporary files on a real file system: the block I/O tests put loop
  # devices with direct I/O on them, which tmpfs and 9p refuse on some
  # kernels. The scratch disk is boot.sh's.
  modprobe -a virtio_blk loop || return
  local scratch
  # (the arm64 guests' root is a vd* disk too: boot-arm64.sh names the scratch one)
  scratch=${BPFSNAP_VM_SCRATCH:-/dev/$(ls /sys/block | grep -m1 '^vd')} || return
  mkfs.ext4 -q -F "$scratch" && mount "$scratch" /mnt || return
  export TMPDIR=/mnt
}
setup || { echo "FAILED: setting up the guest"; exit 1; }

failed=()
while read -r binary args; do
  [[ -z $binary ]] && continue
  echo "=== $(basename "$binary") $args"
  start=$(date +%s)
  # shellcheck disable=SC2086 # args are words
  if ! "$binary" --test-threads 2 $args; then
    failed+=("$(basename "$binary") $args")
  fi
  echo "=== $(basename "$binary"): $(($(date +%s) - start)) s"
done < "$suite"
if ((${#failed[@]})); then
  printf 'FAILED: %s\n' "${failed[@]}"
  exit 1
fi
echo "all passed"
