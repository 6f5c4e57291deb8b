#!/usr/bin/env bash
# Fetches the kernels pinned in tools/vm/kernels.conf from Debian's package
# registry and unpacks each into $BPFSNAP_VM_DIR/kernels/NAME (default
# target/vm), ready for tools/vm/boot.sh: those named, or all.
#
#   tools/vm/fetch.sh [NAME...]
#
# Cached: a kernel already unpacked
# at its pinned version is not fetched again.
#
# apt runs with a private configuration under $BPFSNAP_VM_DIR/apt (its own
# sources list, lists and cache), so the machine's own apt sources and state
# are untouched. The packages are unpacked, not installed: no initramfs, no
# boot loader. The mirror is the one the machine's apt sources name.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
vm_dir=${BPFSNAP_VM_DIR:-$root/target/vm}
conf=$root/tools/vm/kernels.conf
say() { echo "vm-fetch: $*" >&2; }

# mirror(): the machine's Debian mirror.
source "$root/tools/debian-mirror.sh"

# name suite package version, one line per kernel (those named on the
# command line, or all).
wanted=" $* "
kernels() {
  grep -vE '^\s*(#|$)' "$conf" | awk '{print $1, $2, $3, $4}' |
    while read -r name rest; do
      if [[ $wanted == "  " || $wanted == *" $name "* ]]; then echo "$name $rest"; fi
    done
}

# The architecture of kernel NAME: the arm64 legs are named NAME-arm64.
arch_of() { [[ $1 == *-arm64 ]] && echo arm64 || echo amd64; }

needed=()
while read -r name suite package version; do
  if [[ $(cat "$vm_dir/kernels/$name/.pinned" 2>/dev/null) != "$package=$version" ]]; then
    needed+=("$name $suite $package $version")
  fi
done < <(kernels)
((${#needed[@]})) || exit 0

# One private apt configuration per architecture (amd64 in apt/, as before;
# arm64 in apt-arm64/), each with the suites its kernels come from.
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
declare -A updated=()
apt_setup() { # apt_setup ARCH: sets apt_opts, updating the lists once per run
  local arch=$1 apt_dir=$vm_dir/apt
  [[ $arch == amd64 ]] || apt_dir=$vm_dir/apt-$arch
  apt_opts=(
    -o "Dir::Etc::sourcelist=$apt_dir/sources.list" -o Dir::Etc::sourceparts=/dev/null
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
    -o Dir::State::status=/dev/null -o APT::Sandbox::User=root
    -o "APT::Architecture=$arch" -o "APT::Architectures=$arch"
  )
  [[ -z ${updated[$arch]:-} ]] || return 0
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
  kernels | while read -r name suite _; do
    if [[ $(arch_of "$name") == "$arch" ]]; then echo "$suite"; fi
  done | sort -u | while read -r suite; do
    echo "deb [arch=$arch signed-by=$keyring] $(mirror) $suite main"
  done > "$apt_dir/sources.list"
  say "updating the package lists of $(awk '{print $5}' "$apt_dir/sources.list" | sort -u | xargs) ($arch, $apt_dir)"
  apt-get "${apt_opts[@]}" -qq update
  updated[$arch]=1
}
mkdir -p "$vm_dir/debs"

for entry in "${needed[@]}"; do
  read -r name suite package version <<< "$entry"
  arch=$(arch_of "$name")
  apt_setup "$arch"
  if ! apt-cache "${apt_opts[@]}" show "$package=$version" > /dev/null 2>&1; then
    say "$package $version is not in Debian's $suite any more: pin the current one in tools/vm/kernels.conf" \
      "(apt-cache ${apt_opts[*]} policy '$package' lists what there is)"
    exit 1
  fi
  say "fetching $package $version ($suite, $arch)"
  (cd "$vm_dir/debs" && apt-get "${apt_opts[@]}" -qq download "$package:$arch=$version")
  deb=$(ls "$vm_dir/debs/${package}_${version//:/%3a}"_"$arch".deb)
  tree=$vm_dir/kernels/$name
  rm -rf "$tree"
  mkdir -p "$tree"
  dpkg-deb -x "$deb" "$tree"
  # Module dependencies, so the guest can modprobe from this tree (merged
  # /usr kernels keep their modules under usr/).
  release=$(basename "$(ls -d "$tree"/boot/vmlinuz-* )" | sed 's/^vmlinuz-//')
  modules_base=$tree
  [[ -d $tree/lib/modules/$release ]] || modules_base=$tree/usr
  depmod -b "$modules_base" "$release"
  echo "$release" > "$tree/.release"
  echo "$package=$version" > "$tree/.pinned"
  rm -f "$deb"
done
