# bpfsnap's container image, for the DaemonSet in examples/deploy/kubernetes:
#
#   docker build -t bpfsnap .        (or podman build; the build stage needs
#                                     Debian's and crates.io's registries)
#
# For amd64 and arm64 nodes both, a manifest list (see
# examples/deploy/kubernetes/README.md): `podman build --platform
# linux/amd64,linux/arm64 --manifest NAME .` (the arm64 build stage runs
# under qemu-user emulation), or `make image`, which builds only the runtime
# stage, from this machine's builds (the arm64 one cross-built: tools/image.sh).
#
# Built with the Rust toolchain on Debian 12; the runtime image holds only
# the binary and the libraries it links (libelf, zlib, libgcc_s, libc and the
# dynamic loader, as ldd finds them: tools/image-root.sh), no shell, no
# package manager. The BPF programs are inside the binary.
ARG RUST_IMAGE=docker.io/library/rust:1-bookworm

FROM ${RUST_IMAGE} AS build
# clang compiles the BPF programs; libbpf (vendored, static) links libelf and zlib.
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang llvm libelf-dev zlib1g-dev pkg-config make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
 && tools/image-root.sh target/release/bpfsnap /out

FROM scratch AS runtime
COPY --from=build /out/rootfs/ /
# Root in the container, with only the capabilities the DaemonSet adds:
# Debian's textfile directory (the hostPath) is root's.
USER 0
ENTRYPOINT ["/usr/bin/bpfsnap"]
CMD ["run", "--interval", "30s", "--output", "/var/lib/prometheus/node-exporter/bpfsnap.prom"]
