#!/usr/bin/env bash
# Generates bpf/vmlinux/aarch64/vmlinux.h, the kernel types arm64 builds of
# bpfsnap compile their BPF programs against, on any machine (x86_64 too):
# from the BTF inside Debian's own arm64 kernel, pinned below, fetched from
# Debian's package registry. (bpf/vmlinux/x86_64/vmlinux.h comes from a
# running kernel's /sys/kernel/btf/vmlinux: `make vmlinux`.)
#
#   tools/gen-vmlinux.sh          (= make vmlinux ARCH=arm64)
#
# Steps: apt-get download the kernel package (private apt configuration under
# target/vmlinux-gen, as tools/vm/fetch.sh does, so the machine's apt state is
# untouched), unpack /boot/vmlinuz-* (an arm64 Image, gzip-compressed),
# decompress it, find the raw BTF blob in it (struct btf_header: magic 0xEB9F
# little-endian, version 1, flags 0, hdr_len 24, then type_off, type_len,
# str_off, str_len; the blob is hdr_len + str_off + str_len bytes), check it
# with bpftool, and dump it as C. Needs: apt-get, dpkg-deb, python3, bpftool.
set -euo pipefail

# The kernel the types come from: Debian 13's 6.12, the newest of the kernel
# matrix (tools/vm/kernels.conf); CO-RE relocations make the programs work
# on older kernels, as with the x86_64 header.
suite=trixie
package=linux-image-6.12.117+deb13-arm64-unsigned
version=6.12.117-1
arch=arm64
dir_name=aarch64 # bpf/vmlinux/<CARGO_CFG_TARGET_ARCH>

root=$(cd "$(dirname "$0")/.." && pwd)
work=${BPFSNAP_VMLINUX_DIR:-$root/target/vmlinux-gen}
out=$root/bpf/vmlinux/$dir_name/vmlinux.h
say() { echo "gen-vmlinux: $*" >&2; }

for tool in apt-get dpkg-deb python3 bpftool; do
  command -v "$tool" >/dev/null || { say "$tool is missing (make test-deps installs it)"; exit 1; }
done

# mirror(): the machine's Debian mirror.
source "$root/tools/debian-mirror.sh"

apt_dir=$work/apt
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$work/debs"
echo "deb [arch=$arch signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $(mirror) $suite main" \
  > "$apt_dir/sources.list"
apt_opts=(
  -o "Dir::Etc::sourcelist=$apt_dir/sources.list" -o Dir::Etc::sourceparts=/dev/null
  -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
  -o Dir::State::status=/dev/null -o APT::Sandbox::User=root
  -o "APT::Architecture=$arch" -o "APT::Architectures=$arch"
)

deb=$(ls "$work/debs/${package}_${version}_$arch.deb" 2>/dev/null || true)
if [[ -z $deb ]]; then
  say "updating the package list of Debian $suite ($arch)"
  apt-get "${apt_opts[@]}" -qq update
  if ! apt-cache "${apt_opts[@]}" show "$package=$version" >/dev/null 2>&1; then
    say "$package $version is not in Debian's $suite any more: pin the current one in $0" \
      "(apt-cache ${apt_opts[*]} policy '$package' lists what there is)"
    exit 1
  fi
  say "fetching $package $version"
  (cd "$work/debs" && apt-get "${apt_opts[@]}" -qq download "$package:$arch=$version")
  deb=$(ls "$work/debs/${package}_${version}_$arch.deb")
fi

tree=$work/tree
rm -rf "$tree"
mkdir -p "$tree"
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tree" --wildcards './boot/vmlinuz-*'
image=$(ls "$tree"/boot/vmlinuz-*)
release=${image##*/vmlinuz-}
say "extracting the BTF of Linux $release ($arch)"
python3 - "$image" "$work/vmlinux.btf" <<'EOF'
import gzip, struct, sys

data = open(sys.argv[1], "rb").read()
if data[:2] == b"\x1f\x8b":
    data = gzip.decompress(data)
# struct btf_header { u16 magic 0xEB9F; u8 version 1; u8 flags 0; u32 hdr_len 24;
#                     u32 type_off, type_len, str_off, str_len; }
found = []
start = 0
while (at := data.find(b"\x9f\xeb\x01\x00\x18\x00\x00\x00", start)) >= 0:
    start = at + 1
    type_off, type_len, str_off, str_len = struct.unpack_from("<4I", data, at + 8)
    size = 24 + str_off + str_len
    if type_off == 0 and str_off == type_len and str_len > 0 and at + size <= len(data):
        # The string section starts with "" and ends with a NUL.
        strings = data[at + 24 + str_off : at + size]
        if strings[:1] == b"\0" and strings[-1:] == b"\0":
            found.append((size, at))
if not found:
    sys.exit("no BTF blob in the kernel image")
size, at = max(found)
open(sys.argv[2], "wb").write(data[at : at + size])
print(f"BTF at offset {at:#x}, {size} bytes", file=sys.stderr)
EOF
bpftool btf dump file "$work/vmlinux.btf" format raw | sed -n 1,3p >&2
types=$(bpftool btf dump file "$work/vmlinux.btf" format raw | grep -c '^\[')
say "$types types"
((types > 50000)) || { say "only $types types: not a kernel's BTF"; exit 1; }

mkdir -p "$(dirname "$out")"
{
  printf '%s\n' "/* vmlinux.h for $dir_name: kernel type definitions for CO-RE BPF programs." \
    ' *' \
    " * Generated from the BTF of Linux $release ($dir_name), Debian's $package" \
    " * $version, on any machine with:" \
    ' *     make vmlinux ARCH=arm64      (= tools/gen-vmlinux.sh)' \
    ' * It is the whole dump; CO-RE relocations make the compiled programs work on' \
    ' * other kernel versions, where the types they use may differ in layout.' \
    ' */'
  bpftool btf dump file "$work/vmlinux.btf" format c
} > "$out.new"
mv "$out.new" "$out"
say "wrote $out ($(wc -c < "$out") bytes)"
