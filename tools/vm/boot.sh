#!/usr/bin/env bash
# Boots kernel NAME of tools/vm/kernels.conf (fetched by fetch.sh) in QEMU
# over this machine's root file system, runs COMMAND inside as root, and
# exits with its status (kernels named *-arm64: tools/vm/boot-arm64.sh).
# OUT_DIR is shared read-write with the guest and
# receives `log` (the command's output) and `console.log` (the kernel's).
#
#   tools/vm/boot.sh NAME OUT_DIR COMMAND [ARGS...]
#
# The guest sees the host's root read-only with writable overlays (/etc,
# /tmp, /usr, /var, ...): binaries built on the host run unchanged inside.
# It also gets an empty 2 GiB scratch disk (a sparse OUT_DIR/scratch.img on
# virtio-blk: `modprobe virtio_blk` shows it as the guest's only vd* disk):
# the overlays are tmpfs and 9p, on which some kernels cannot do direct I/O,
# which the block I/O tests need.
# It runs under virtme-ng (PyPI, in a venv under $BPFSNAP_VM_DIR), with KVM
# where a guest boots under it and software emulation (TCG) otherwise:
# BPFSNAP_VM_ACCEL=kvm|tcg forces one, `auto` (the default) tries KVM once
# per machine and remembers the answer in $BPFSNAP_VM_DIR/accel.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
vm_dir=${BPFSNAP_VM_DIR:-$root/target/vm}
say() { echo "vm-boot: $*" >&2; }

(($# >= 3)) || { say "usage: $0 NAME OUT_DIR COMMAND [ARGS...]"; exit 2; }
name=$1 out=$2
# The arm64 legs boot in qemu-system-aarch64 over an arm64 root of their own.
[[ $name == *-arm64 ]] && exec "$root/tools/vm/boot-arm64.sh" "$@"
shift 2
tree=$vm_dir/kernels/$name
[[ -f $tree/.release ]] || { say "kernel $name is not fetched: run tools/vm/fetch.sh"; exit 1; }
kernel=$tree/boot/vmlinuz-$(cat "$tree/.release")

vng=$vm_dir/venv/bin/vng
# Guests boot side by side (tools/vm/matrix.sh): what is set up once per
# machine (the venv, the choice of accelerator) is set up under a lock.
mkdir -p "$vm_dir"
exec 9> "$vm_dir/boot.lock"
flock 9
if [[ ! -x $vng ]]; then
  say "installing virtme-ng into $vm_dir/venv"
  python3 -m venv "$vm_dir/venv"
  "$vm_dir/venv/bin/pip" install --quiet --disable-pip-version-check virtme-ng==1.42
fi

mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -f "$out/rc" "$out/log" "$out/scratch.img"
truncate -s 2G "$out/scratch.img"
# The command's status goes to a file: vng's own exit status does not carry it.
{
  echo '#!/bin/sh'
  printf 'cd %q || exit 1\n' "$PWD"
  printf '%q ' "$@"
  printf '> %q 2>&1\n' "$out/log"
  printf 'echo $? > %q\n' "$out/rc"
} > "$out/guest.sh"
chmod +x "$out/guest.sh"

# A guest whose CPUs spin in its kernel for good is stopped instead of left
# to the time limit: its kernel reports soft lockups again and again. Seen
# once under TCG on 5.10: both vCPUs at syscall entry, where the kernel was
# patching the sys_enter tracepoint's jump, for 15 minutes; the same suite
# passed when booted again.
lockup_pattern=${BPFSNAP_VM_LOCKUP_PATTERN:-watchdog: BUG: soft lockup}
lockups=${BPFSNAP_VM_LOCKUPS:-6}

vm() { # vm ACCEL LIMIT_SECONDS CONSOLE_LOG; fails if the guest locked up
  local accel=()
  # One host thread for all vCPUs under TCG: with one per vCPU, the guest's
  # kernel patching its own text (a static branch flipped as a tracepoint
  # gets its first BPF program) was seen to leave the other vCPU running
  # stale code — an int3 oops in handle_softirqs on 6.12, both vCPUs
  # spinning at syscall entry on 5.10.
  [[ $1 == tcg ]] && accel=(--disable-kvm --qemu-opts="-accel tcg,thread=single")
  # A session of its own, so that QEMU goes with it when it is stopped.
  # vng runs virtme-run by name: the venv's bin first in PATH.
  PATH="$vm_dir/venv/bin:$PATH" setsid timeout --kill-after=10 "$2" "$vng" --verbose "${accel[@]}" --run "$kernel" --cpus 2 \
    --memory 3G --rwdir "$out" --disk "$out/scratch.img" --exec "$out/guest.sh" > "$3" 2>&1 < /dev/null &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    local seen
    seen=$(grep -c "$lockup_pattern" "$3" 2>/dev/null) || seen=0
    if ((seen >= lockups)); then
      kill -TERM -- "-$pid" 2>/dev/null || true
      sleep 5
      kill -KILL -- "-$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
      return 1
    fi
    sleep 5
  done
  wait "$pid" 2>/dev/null || true
}

# KVM where it works: nested KVM can hang a guest before the kernel prints a
# line, so the first boot under it must reach the guest's init in 30 s (it takes 2-5).
accel=${BPFSNAP_VM_ACCEL:-auto}
if [[ $accel == auto ]]; then
  accel=$(cat "$vm_dir/accel" 2>/dev/null || true)
  if [[ -z $accel ]]; then
    accel=tcg
    if [[ -w /dev/kvm ]]; then
      say "trying KVM"
      vm kvm 30 "$out/console.log" || true
      if grep -q 'virtme-ng-init' "$out/console.log"; then accel=kvm; fi
      [[ $accel == kvm ]] || say "a guest does not boot under KVM here (see $out/console.log): using TCG"
    fi
    echo "$accel" > "$vm_dir/accel"
    if [[ $accel == kvm && -f $out/rc ]]; then
      exit "$(cat "$out/rc")"
    fi
  fi
fi
flock -u 9
# A guest whose kernel crashed before it ran the command (seen once here
# under TCG: an oops in sched_clock_cpu while booting) or locked up boots
# once more, and says so; a test that failed is never run again.
again=
vm "$accel" "${BPFSNAP_VM_TIMEOUT:-1200}" "$out/console.log" || again="its kernel locked up"
[[ -n $again || -f $out/log ]] || again="the guest crashed before running the command"
if [[ -n $again ]]; then
  mv "$out/console.log" "$out/console.first.log"
  [[ -f $out/log ]] && mv "$out/log" "$out/log.first"
  say "kernel $name: $again (see $out/console.first.log); booting it again"
  rm -f "$out/rc"
  truncate -s 0 "$out/scratch.img" && truncate -s 2G "$out/scratch.img"
  vm "$accel" "${BPFSNAP_VM_TIMEOUT:-1200}" "$out/console.log" || say "kernel $name: it locked up again"
fi
rm -f "$out/scratch.img"
if [[ ! -f $out/rc ]]; then
  say "kernel $name: the guest did not finish its command (timeout or crash); last console lines:"
  tail -15 "$out/console.log" >&2
  exit 125
fi
exit "$(cat "$out/rc")"
