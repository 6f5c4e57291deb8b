#!/usr/bin/env bash
# Installs what bpfsnap's build and tests need on Debian 12 and sets up the
# kernel filesystems; does nothing that is already done. Run as root
# (`make deps` calls it).
set -euo pipefail

packages=(
  clang llvm              # compile bpf/*.bpf.c (-target bpf)
  libelf-dev zlib1g-dev   # libbpf links them
  pkg-config make gcc     # libbpf-sys's build
  bpftool                 # make vmlinux; tests list loaded programs
  prometheus              # promtool check metrics
  prometheus-node-exporter # the textfile collector, in tests
  util-linux              # setpriv, mount, unshare, script (tests)
  mount                   # losetup: a loop device for the block I/O tests
  systemd                 # systemd-analyze verify of the units (tests)
  dpkg-dev binutils       # make deb: dpkg-shlibdeps, dpkg-gencontrol, strip
  debootstrap             # tests/package.rs: a Debian 12 root to install the package into
  podman                  # tests/container.rs: builds and runs the image (no Docker engine here)
  curl                    # tests of `bpfsnap serve`
  openssl                 # certificates for the TLS tests of `bpfsnap serve`
  iproute2                # ip netns, tc (network built-in tests)
  python3                 # tools/*.py
  pci.ids                 # pci_* decoders read /usr/share/misc/pci.ids
  systemtap-sdt-dev       # <sys/sdt.h>: the USDT probe of tests/attach_types' target
  # The kernel matrix (tools/vm): Debian's kernels booted in QEMU by
  # virtme-ng (installed from PyPI into a venv under target/vm), with
  # busybox for its initramfs and kmod for modules in the guest.
  qemu-system-x86 busybox-static kmod python3-venv
  debian-archive-keyring  # verifies the kernel packages' suites
)

say() { echo "deps: $*" >&2; }

missing=()
for pkg in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]})); then
  if [[ $(id -u) != 0 ]]; then
    say "missing packages: ${missing[*]}; run 'make deps' as root or: apt-get install ${missing[*]}"
    exit 1
  fi
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  say "no Rust toolchain: install one with rustup (https://rustup.rs); Debian 12's rustc is too old for libbpf-rs"
  exit 1
fi

# Kernel filesystems: tracefs for classic tracepoints, bpffs for pinning.
if [[ $(id -u) == 0 ]]; then
  if [[ ! -d /sys/kernel/tracing/events ]]; then
    say "mounting tracefs on /sys/kernel/tracing"
    mount -t tracefs nodev /sys/kernel/tracing
  fi
  if [[ $(stat -f -c %T /sys/fs/bpf 2>/dev/null) != bpf_fs ]]; then
    say "mounting bpffs on /sys/fs/bpf"
    mkdir -p /sys/fs/bpf
    mount -t bpf bpf /sys/fs/bpf
  fi
fi
