#!/usr/bin/env bash
# Installs what bpfsnap needs on Debian 12 and sets up the kernel
# filesystems; does nothing that is already done. Run as root.
#
#   tools/deps.sh build   what building and running need (`make deps`,
#                         `make run`): a C/BPF compiler, libbpf's libraries,
#                         and Rust if none recent enough is found
#   tools/deps.sh test    that plus the test stack (`make test`): promtool,
#                         node_exporter, podman, containerd, QEMU for the
#                         kernel matrix ...,
#                         and on x86_64 what cross-building for arm64 needs
#
# BPFSNAP_ARCH=aarch64 (`make deps ARCH=arm64`) on another host adds what
# cross-building for arm64 needs: Debian's cross gcc, libelf and zlib of the
# arm64 multiarch packages (dpkg --add-architecture arm64), qemu-user to run
# the result (registered with binfmt_misc, as root), and Rust's
# aarch64-unknown-linux-gnu standard library.
#
# Nothing in the build set starts a service: `prometheus` and
# `prometheus-node-exporter` (which do, on :9090 and :9100) and `containerd`
# (the system's, where systemd boots; the tests start their own) come only
# with the test set.
set -euo pipefail

set_name=${1:-build}
# `tools/deps.sh --list build|test`: print the set's packages and stop.
list_only=false
if [[ $set_name == --list ]]; then
  list_only=true
  set_name=${2:-build}
fi

build_packages=(
  clang llvm              # compile bpf/*.bpf.c (-target bpf)
  libelf-dev zlib1g-dev   # libbpf links them
  pkg-config make gcc     # libbpf-sys's build
  curl ca-certificates    # fetching rustup when Rust must be installed
)
test_packages=(
  bpftool                 # make vmlinux; tests list loaded programs
  prometheus              # promtool check metrics
  prometheus-node-exporter # the textfile collector, in tests
  util-linux              # setpriv, mount, unshare, script (tests)
  mount                   # losetup: a loop device for the block I/O tests
  systemd                 # systemd-analyze verify of the units, systemd-socket-activate (tests)
  systemd-container       # tests/package.rs: systemd-nspawn boots the installed package
  debootstrap             # tests/package.rs: a Debian 12 root to install the package into
  podman                  # tests/container.rs: builds and runs the image (no Docker engine here)
  crun                    # tests/container.rs: the image's container without a cgroup (runc refuses)
  runc                    # tests/containers.rs: podman containers with cgroups on a hybrid host (crun refuses)
  containerd              # tests/containers.rs: a private containerd (and ctr) with CRI-annotated containers
  openssl                 # certificates for the TLS tests of `bpfsnap serve`
  iproute2                # ip netns, tc (network built-in tests)
  python3                 # tools/*.py
  pci.ids                 # pci_* decoders read /usr/share/misc/pci.ids
  systemtap-sdt-dev       # <sys/sdt.h>: the USDT probe of tests/attach_types' target
  # The kernel matrix (tools/vm): Debian's kernels booted in QEMU by
  # virtme-ng (installed from PyPI into a venv under target/vm), with
  # busybox for its initramfs and kmod for modules in the guest.
  qemu-system-x86 busybox-static kmod python3-venv
  # Its arm64 legs: qemu-system-aarch64, and an arm64 root built by
  # mmdebstrap, whose maintainer scripts run through qemu-user (binfmt_misc).
  qemu-system-arm mmdebstrap arch-test qemu-user-static e2fsprogs cpio
  debian-archive-keyring  # verifies the kernel packages' suites
  tmux                    # the terminal view, tested at fixed widths
)

# Cross-building for arm64 on another host (BPFSNAP_ARCH=aarch64).
arm64_packages=(
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross # the linker, and cc for libbpf
  libelf-dev:arm64 zlib1g-dev:arm64           # libbpf links them (multiarch)
  qemu-user-static                            # runs the arm64 binary here (.cargo/config.toml)
)
target_arch=${BPFSNAP_ARCH:-$(uname -m)}
cross=false
case $target_arch in
  "$(uname -m)") ;;
  aarch64 | arm64) cross=true target_arch=aarch64 ;;
  *) echo "deps: no cross build for $target_arch from $(uname -m)" >&2; exit 2 ;;
esac
# The tests build and run the arm64 image (tests/container.rs) and package
# (tests/package.rs) on x86_64 too: the test set cross-builds.
if [[ $set_name == test && $(uname -m) == x86_64 ]]; then
  cross=true target_arch=aarch64
fi

case $set_name in
  build) packages=("${build_packages[@]}") ;;
  test) packages=("${build_packages[@]}" "${test_packages[@]}") ;;
  *) echo "usage: tools/deps.sh [--list] build|test" >&2; exit 2 ;;
esac
if $cross; then
  packages+=("${arm64_packages[@]}")
fi
if $list_only; then
  printf '%s\n' "${packages[@]}"
  exit 0
fi

# The Rust installed where none recent enough is found: rustup's minimal
# profile, this version (the one CI and BENCHMARKS.md use), in rustup's
# default place (~/.cargo; the Makefile puts ~/.cargo/bin on PATH).
rust_toolchain=1.95.0
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
  if $cross && ! dpkg --print-foreign-architectures | grep -qx arm64; then
    say "adding arm64 as a foreign architecture (dpkg --add-architecture arm64)"
    dpkg --add-architecture arm64
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The oldest Rust that builds bpfsnap (Cargo.toml's rust-version).
rust_minimum=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' "$(dirname "$0")/../Cargo.toml")

# Whether version $1 (x.y or x.y.z) is at least $2.
at_least() { [[ $(printf '%s\n%s\n' "$2" "$1" | sort -V | head -1) == "$2" ]]; }

rust_ok() {
  local version
  version=$(rustc --version 2>/dev/null | awk '{print $2}') || return 1
  [[ -n $version ]] && command -v cargo >/dev/null && at_least "$version" "$rust_minimum"
}

install_rust() {
  local arch triple dir
  arch=$(uname -m)
  triple="$arch-unknown-linux-gnu"
  dir=$(mktemp -d)
  trap 'rm -rf "$dir"' RETURN
  say "no Rust >= $rust_minimum found: installing Rust $rust_toolchain with rustup (minimal profile) into ~/.cargo"
  curl -sSf --retry 3 -o "$dir/rustup-init" "https://static.rust-lang.org/rustup/dist/$triple/rustup-init"
  curl -sSf --retry 3 -o "$dir/rustup-init.sha256" "https://static.rust-lang.org/rustup/dist/$triple/rustup-init.sha256"
  (cd "$dir" && echo "$(awk '{print $1}' rustup-init.sha256)  rustup-init" | sha256sum -c --quiet -) || {
    say "rustup-init from static.rust-lang.org does not match its checksum: not running it"
    exit 1
  }
  chmod +x "$dir/rustup-init"
  "$dir/rustup-init" -y -q --no-modify-path --profile minimal --default-toolchain "$rust_toolchain"
  export PATH="$HOME/.cargo/bin:$PATH"
}

if ! rust_ok; then
  if [[ $(id -u) != 0 && ! -w ${CARGO_HOME:-$HOME/.cargo} && -e ${CARGO_HOME:-$HOME/.cargo} ]]; then
    say "no Rust >= $rust_minimum and ~/.cargo is not writable: install it with rustup (https://rustup.rs)"
    exit 1
  fi
  install_rust
  rust_ok || { say "Rust $rust_toolchain was installed but rustc/cargo still do not run"; exit 1; }
fi

# The Rust standard library of the cross target.
if $cross; then
  triple=$target_arch-unknown-linux-gnu
  if ! rustc --print sysroot >/dev/null 2>&1 ||
    [[ ! -d $(rustc --print sysroot)/lib/rustlib/$triple ]]; then
    if command -v rustup >/dev/null; then
      say "adding Rust's $triple target"
      rustup target add "$triple"
    else
      say "Rust has no $triple standard library and there is no rustup to add it"
      exit 1
    fi
  fi
fi

# arm64 executables (the cross-built binary, the arm64 root's and the
# arm64 container image's programs) run here through qemu-user: binfmt_misc
# must know them. qemu-user-static's registration (/usr/lib/binfmt.d, flag F:
# the interpreter is opened now, so it works in containers and chroots too)
# is done by systemd-binfmt at boot, which a container or a machine without
# systemd lacks: done here when missing; it lasts until the machine reboots.
if $cross && [[ $(id -u) == 0 ]]; then
  if [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
    say "mounting binfmt_misc"
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  fi
  if [[ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]]; then
    say "registering qemu-aarch64 with binfmt_misc (/usr/lib/binfmt.d/qemu-aarch64.conf)"
    cat /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register
  fi
fi

# `make test` lints: rustfmt and clippy, which rustup's minimal profile lacks.
if [[ $set_name == test ]] && ! { cargo fmt --version && cargo clippy --version; } >/dev/null 2>&1; then
  if command -v rustup >/dev/null; then
    say "adding rustfmt and clippy to the Rust toolchain"
    rustup component add rustfmt clippy
  else
    say "cargo fmt or cargo clippy is missing and there is no rustup to add them"
    exit 1
  fi
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
