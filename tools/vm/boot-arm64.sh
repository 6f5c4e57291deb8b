#!/usr/bin/env bash
# Boots arm64 kernel NAME (NAME-arm64 in tools/vm/kernels.conf, fetched by
# fetch.sh) in qemu-system-aarch64 (-M virt -cpu max, software emulation)
# over the arm64 root tools/vm/root-arm64.sh builds, runs COMMAND inside as
# root from the current directory, and exits with its status. tools/vm/boot.sh
# calls it for the *-arm64 kernels, with the same arguments and results:
#
#   tools/vm/boot-arm64.sh NAME OUT_DIR COMMAND [ARGS...]
#
# OUT_DIR receives `log` (the command's output), `rc` and `console.log`.
# An x86_64 host's root cannot run in the guest (the x86 legs share it over
# 9p), so the guest's root is a raw ext4 image (mkfs.ext4 -d, virtio-blk,
# made for each boot and deleted after it) holding the arm64 root, the
# kernel's modules, and what the command needs from here at the same paths:
# the repository's files (git ls-files), every file named among COMMAND's
# arguments and listed in them (the suite file and its test binaries), the
# aarch64 bpfsnap and the BPF objects built beside it. Debian's arm64
# kernels have virtio-blk and ext4 as modules: a small initramfs (the root's
# static busybox) loads them and switches to the root. The command's output
# comes back out of the image with debugfs, after the guest powers off.
# A second disk is the scratch disk as on x86 (BPFSNAP_VM_SCRATCH=/dev/vdb).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
vm_dir=${BPFSNAP_VM_DIR:-$root/target/vm}
say() { echo "vm-boot: $*" >&2; }

(($# >= 3)) || { say "usage: $0 NAME OUT_DIR COMMAND [ARGS...]"; exit 2; }
name=$1 out=$2
shift 2
tree=$vm_dir/kernels/$name
[[ -f $tree/.release ]] || { say "kernel $name is not fetched: run tools/vm/fetch.sh $name"; exit 1; }
release=$(cat "$tree/.release")
kernel=$tree/boot/vmlinuz-$release
modules=$tree/lib/modules/$release
[[ -d $modules ]] || modules=$tree/usr/lib/modules/$release
command -v qemu-system-aarch64 > /dev/null ||
  { say "qemu-system-aarch64 is missing (make test-deps installs qemu-system-arm)"; exit 1; }

# The arm64 root, built once per machine (under a lock: guests boot side by side).
mkdir -p "$vm_dir"
rootfs=$(flock "$vm_dir/boot.lock" "$root/tools/vm/root-arm64.sh")

mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -f "$out/rc" "$out/log" "$out/scratch.img" "$out/root.img"
stage=$out/stage
rm -rf --one-file-system "$stage"
# Hard links where the file system allows them: the stage is copied by mkfs.
cp -al "$rootfs" "$stage" 2> /dev/null || { rm -rf --one-file-system "$stage"; cp -a "$rootfs" "$stage"; }
mkdir -p "$stage/lib/modules"
cp -al "$modules" "$stage/lib/modules/$release" 2> /dev/null || cp -a "$modules" "$stage/lib/modules/$release"

# The repository at its own path, and every file the command names (the
# suite file, and the binaries each of its lines names).
add() { # add PATH...: copies each into the stage at its absolute path
  local f
  for f in "$@"; do
    f=$(realpath -s "$f")
    [[ -e $f ]] || continue
    mkdir -p "$stage$(dirname "$f")"
    cp -al "$f" "$stage$f" 2> /dev/null || cp -a "$f" "$stage$f"
  done
}
(cd "$root" && git ls-files -z --cached --others --exclude-standard) |
  (cd "$root" && xargs -0 -n 200 bash -c 'for f; do [[ -f $f ]] && printf "%s\0" "$f"; done' _) |
  (cd "$root" && cpio -0 -pdlm --quiet "$stage$root" 2> /dev/null || cpio -0 -pdm --quiet "$stage$root")
for arg in "$@"; do
  [[ -f $arg ]] || continue
  add "$arg"
  # A list of files (the suite): the first word of each line.
  if grep -qI . "$arg" 2> /dev/null; then
    while read -r first _; do
      [[ $first == /* && -f $first ]] && add "$first"
    done < "$arg"
  fi
done
# The aarch64 bpfsnap the tests run (CARGO_BIN_EXE_bpfsnap), the BPF objects
# built beside it (BPFSNAP_EXAMPLE_OBJECTS) and cargo's directory for
# integration tests' files (CARGO_TARGET_TMPDIR), writable in the guest.
cross=$root/target/aarch64-unknown-linux-gnu/debug
add "$cross/bpfsnap"
for d in "$cross"/build/bpfsnap-*/out; do add "$d"; done
mkdir -p "$stage$root/target/aarch64-unknown-linux-gnu/tmp"

# What the guest runs after the root is mounted; the command as on x86.
mkdir -p "$stage/vmout"
# Its output also goes to the console (console.log), to follow a long run
# and to keep what it printed if the guest never finishes.
{
  echo '#!/bin/bash'
  printf 'cd %q || exit 1\n' "$PWD"
  printf '%q ' "$@"
  printf '2>&1 | tee /vmout/log > /dev/console\n'
  printf 'echo "${PIPESTATUS[0]}" > /vmout/rc\n'
} > "$stage/vmout/guest.sh"
cat > "$stage/vmout/init" <<'EOF'
#!/bin/bash
# The guest's init: mounts what a Debian system has, runs the command, and
# powers off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2> /dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t securityfs securityfs /sys/kernel/security
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t bpf bpf /sys/fs/bpf
hostname bpfsnap-arm64
ip link set lo up
ulimit -l unlimited
echo "vm-init: running the command" > /dev/console
BPFSNAP_VM_SCRATCH=/dev/vdb /bin/bash /vmout/guest.sh
echo "vm-init: the command exited $(cat /vmout/rc 2> /dev/null)" > /dev/console
sync
echo o > /proc/sysrq-trigger
sleep 10
EOF
chmod +x "$stage/vmout/guest.sh" "$stage/vmout/init"

# The initramfs: busybox, the modules the root is mounted with (in the order
# modules.dep gives), and an init that loads them and switches to the root.
initrd=$out/initrd
rm -rf "$initrd" && mkdir -p "$initrd/bin" "$initrd/modules"
cp "$rootfs/bin/busybox" "$initrd/bin/busybox"
python3 - "$modules" "$initrd/modules" virtio_pci virtio_blk crc32c_generic ext4 > "$initrd/modules/order" <<'EOF'
import lzma, os, sys
base, dest, wanted = sys.argv[1], sys.argv[2], sys.argv[3:]
deps = {}
for line in open(os.path.join(base, "modules.dep")):
    path, _, rest = line.partition(":")
    deps[path] = rest.split()
by_name = {os.path.basename(p).split(".ko")[0].replace("-", "_"): p for p in deps}
order = []
def visit(path):
    if path in order:
        return
    for dep in deps[path]:
        visit(dep)
    order.append(path)
for name in wanted:
    if name in by_name:  # not a module where it is built in
        visit(by_name[name])
for path in order:
    data = open(os.path.join(base, path), "rb").read()
    if path.endswith(".xz"):
        data = lzma.decompress(data)
    name = os.path.basename(path).split(".ko")[0] + ".ko"
    open(os.path.join(dest, name), "wb").write(data)
    print(name)
EOF
cat > "$initrd/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules/order); do insmod /modules/$m || echo "initramfs: insmod $m failed"; done
for i in $(seq 100); do [ -b /dev/vda ] && break; sleep 0.1; done
mount -t ext4 /dev/vda /root || { echo "initramfs: cannot mount /dev/vda"; ls /dev; poweroff -f; }
umount /proc /sys
mount --move /dev /root/dev 2> /dev/null || umount /dev
exec switch_root /root /vmout/init
EOF
chmod +x "$initrd/init"
(cd "$initrd" && find . | cpio -o -H newc --quiet | gzip -1) > "$out/initrd.img"

size_mb=$(($(du -sm "$stage" | cut -f1) * 13 / 10 + 1024))
mkfs.ext4 -q -F -L bpfsnap-arm64 -d "$stage" "$out/root.img" "${size_mb}M" > /dev/null
rm -rf --one-file-system "$stage" "$initrd"
truncate -s 2G "$out/scratch.img"

vm() { # vm LIMIT_SECONDS CONSOLE_LOG
  # One host thread for both vCPUs, as boot.sh's guests: with one per vCPU
  # (qemu-system-aarch64's default), a syscall tracepoint's first BPF program
  # flipping the static branch at syscall entry was seen to go unseen for a
  # whole run on 6.1 — programs attached, not one event counted — in about
  # one run of ten of tests/user_programs.rs's ebpf_exporter test; none in
  # 56 with one thread.
  # A session of its own, so that QEMU goes with it when it is stopped.
  setsid timeout --kill-after=10 "$1" qemu-system-aarch64 -M virt -accel tcg,thread=single \
    -cpu max,pauth-impdef=on \
    -smp 2 -m 3G -nographic -no-reboot \
    -kernel "$kernel" -initrd "$out/initrd.img" \
    -append "console=ttyAMA0 panic=-1 rw" \
    -drive "file=$out/root.img,if=none,id=root,format=raw" -device virtio-blk-pci,drive=root,addr=0x4 \
    -drive "file=$out/scratch.img,if=none,id=scratch,format=raw" -device virtio-blk-pci,drive=scratch,addr=0x5 \
    -nic none > "$2" 2>&1 < /dev/null || true
}
vm "${BPFSNAP_VM_TIMEOUT:-1200}" "$out/console.log"
rm -f "$out/scratch.img"
for f in log rc; do
  debugfs -R "dump /vmout/$f $out/$f" "$out/root.img" > /dev/null 2>&1 || true
  [[ -s $out/$f ]] || rm -f "$out/$f"
done
rm -f "$out/root.img"
if [[ ! -f $out/rc ]]; then
  say "kernel $name: the guest did not finish its command (timeout or crash); last console lines:"
  tail -15 "$out/console.log" >&2
  exit 125
fi
exit "$(cat "$out/rc")"
