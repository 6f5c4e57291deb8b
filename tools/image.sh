#!/usr/bin/env bash
# bpfsnap's container image for every architecture it is built for, and the
# manifest list that names them all, in podman's local storage, without a
# registry and without the Dockerfile's Rust build stage:
#
#   tools/image.sh NAME BINARY...   (as root; `make image`)
#
# For each BINARY (bpfsnap built for amd64 or arm64, e.g. cross-built by
# `make build ARCH=arm64`), the Dockerfile's runtime stage, its build stage
# replaced (--build-context build=DIR) by what that stage leaves:
# tools/image-root.sh's root of the binary (its libraries of its
# architecture). Each is built for the binary's platform (--platform
# linux/ARCH: the image's config says arm64, and podman, a kubelet, pulls it
# on arm64 nodes) and tagged NAME-ARCH; the runtime stage runs nothing, so no
# emulation is needed to build it. Then the manifest list NAME (`podman
# manifest`) holding them: pushed with `podman manifest push --all NAME
# docker://REGISTRY/bpfsnap:VERSION`, it is the one image name the DaemonSet
# uses on amd64 and arm64 nodes alike. NAME is made afresh.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
say() { echo "image: $*" >&2; }
(($# >= 2)) || { echo "usage: tools/image.sh NAME BINARY..." >&2; exit 2; }
name=$1
shift
command -v podman >/dev/null || { say "podman is missing (make test-deps installs it)"; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/empty"
images=()
for binary in "$@"; do
  # (the build stage leaves /out/rootfs)
  context=$work/${#images[@]}
  "$root/tools/image-root.sh" "$binary" "$context/out"
  arch=$(cat "$context/out/arch")
  [[ " ${images[*]} " != *" $name-$arch "* ]] || { say "two binaries for $arch: $*"; exit 1; }
  podman build --quiet --platform "linux/$arch" --target runtime --build-context "build=$context" \
    -f "$root/Dockerfile" -t "$name-$arch" "$work/empty" >/dev/null
  images+=("$name-$arch")
done

if podman manifest exists "$name" 2>/dev/null; then
  podman manifest rm "$name" >/dev/null
fi
podman manifest create "$name" >/dev/null
for image in "${images[@]}"; do
  podman manifest add "$name" "containers-storage:$image" >/dev/null
done
