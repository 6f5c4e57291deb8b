# bpfsnap — run `make run` or `make test` as root on Debian 12; both install
# what is missing first (tools/deps.sh): `make run` only what building and
# running need, `make test` the test stack too.

# Where tools/deps.sh installs Rust (rustup's default) if none is found.
export PATH := $(HOME)/.cargo/bin:$(PATH)
CARGO ?= cargo

# The architecture to build for: the host's by default; `make build
# ARCH=arm64` cross-builds an aarch64 binary on an x86_64 host (Debian's
# cross gcc and arm64 multiarch libelf/zlib, which `make deps ARCH=arm64`
# installs; the linker is set in .cargo/config.toml). Debian's (amd64, arm64)
# and Rust's (x86_64, aarch64) names both work. build.rs compiles the BPF
# programs for the cargo target's architecture (CARGO_CFG_TARGET_ARCH), with
# bpf/vmlinux/<arch>/vmlinux.h, never for the host's.
HOST_ARCH := $(shell uname -m)
ARCH ?=
RUST_ARCH := $(strip $(or $(if $(filter arm64 aarch64,$(ARCH)),aarch64),\
	$(if $(filter amd64 x86_64 x86,$(ARCH)),x86_64),$(if $(ARCH),$(ARCH)),$(HOST_ARCH)))
ifeq ($(filter x86_64 aarch64,$(RUST_ARCH)),)
$(error ARCH=$(ARCH): bpfsnap builds for x86_64 (amd64) and aarch64 (arm64))
endif
ifeq ($(RUST_ARCH),$(HOST_ARCH))
CARGO_TARGET :=
BIN := target/release/bpfsnap
else
CARGO_TARGET := --target $(RUST_ARCH)-unknown-linux-gnu
BIN := target/$(RUST_ARCH)-unknown-linux-gnu/release/bpfsnap
endif
# Debian's name of it (make deb).
DEB_ARCH := $(if $(filter aarch64,$(RUST_ARCH)),arm64,amd64)
# Kernel tests must run in `make test`: never let them skip.
export BPFSNAP_REQUIRE_KERNEL_TESTS := 1

.PHONY: all deps test-deps build run install deb image test vm-test vm-test-arm64 lint fmt docs examples vmlinux syscall-table errno-table clean \
	cargo-fuzz fuzz fuzz-smoke fuzz-cmin soak bench

all: build

# What building and running need (a compiler, libbpf's libraries, Rust).
deps:
	@BPFSNAP_ARCH=$(RUST_ARCH) tools/deps.sh build

# That and what `make test` needs (promtool, node_exporter, podman, QEMU ...).
test-deps:
	@BPFSNAP_ARCH=$(RUST_ARCH) tools/deps.sh test

build: deps
	$(CARGO) build --release --locked $(CARGO_TARGET)

# A 5 s snapshot of the default programs, to stdout, in the text format
# node_exporter reads (`bpfsnap run` alone shows tables on a terminal).
run: build
	$(BIN) run --for 5s --output - --format text

PREFIX ?= /usr/local
# The binary, its man pages and shell completions (the cron file and the
# example unit in examples/deploy use /usr/local/bin/bpfsnap).
install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/bpfsnap
	install -d $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 0644 man/*.1 $(DESTDIR)$(PREFIX)/share/man/man1/
	install -D -m 0644 completions/bpfsnap.bash $(DESTDIR)$(PREFIX)/share/bash-completion/completions/bpfsnap
	install -D -m 0644 completions/_bpfsnap $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_bpfsnap
	install -D -m 0644 completions/bpfsnap.fish $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/bpfsnap.fish

# The Debian package, target/deb/bpfsnap_VERSION_ARCH.deb: the binary, man
# pages, completions, systemd units (packaging/systemd), their /etc/default
# files, README and examples. Built from debian/ (debhelper) by
# `dpkg-buildpackage -us -uc -b` in a cached Debian 12 root (tools/deb.sh,
# tools/debroot.sh), with this machine's Rust and cargo's registry cache,
# then checked by lintian. Install with: apt install ./target/deb/bpfsnap_*.deb
# `make deb ARCH=arm64` cross-builds bpfsnap_VERSION_arm64.deb on amd64
# (dpkg-buildpackage -a arm64 in a root with crossbuild-essential-arm64).
deb: test-deps
	tools/deb.sh target/deb $(DEB_ARCH)

# The container image for linux/amd64 and linux/arm64, and the manifest list
# IMAGE naming both (the one name the DaemonSet needs on either kind of
# node), in podman's local storage: the Dockerfile's runtime stage from the
# release builds, native and cross-built for arm64, on an x86_64 host
# (tools/image.sh). Publish: podman manifest push --all IMAGE docker://REGISTRY/bpfsnap:VERSION
IMAGE ?= localhost/bpfsnap:$(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
image: test-deps
	$(CARGO) build --release --locked
	$(CARGO) build --release --locked --target aarch64-unknown-linux-gnu
	tools/image.sh $(IMAGE) target/release/bpfsnap target/aarch64-unknown-linux-gnu/release/bpfsnap

# Everything: format, lints, unit tests and the kernel/promtool/node_exporter
# integration tests (as root) on this machine's kernel, where every built-in
# must run, a short soak, and the kernel matrix beside them (tools/test.sh).
test: test-deps lint fuzz-smoke
	CARGO="$(CARGO)" tools/test.sh $(KERNELS)

# The kernel matrix: Debian's 5.10, 6.1 and 6.12 kernels (pinned in
# tools/vm/kernels.conf, fetched from Debian's package registry) booted in
# QEMU over this machine's root, running tools/vm/suite.txt in each.
# `make vm-test KERNELS=6.12` runs one.
vm-test: test-deps
	$(if $(findstring -arm64,$(KERNELS)),@BPFSNAP_ARCH=aarch64 tools/deps.sh test)
	CARGO="$(CARGO)" tools/vm/matrix.sh $(KERNELS)

# The arm64 legs of the matrix: Debian's arm64 6.1 and 6.12 kernels booted in
# qemu-system-aarch64 (software emulation) over an arm64 root built by
# tools/vm/root-arm64.sh, running the same suite cross-built for aarch64
# (what cross-building needs is installed first, as `make deps ARCH=arm64`).
# `make vm-test KERNELS=6.12-arm64` runs one.
vm-test-arm64: test-deps
	@BPFSNAP_ARCH=aarch64 tools/deps.sh test
	CARGO="$(CARGO)" tools/vm/matrix.sh 6.1-arm64 6.12-arm64
	$(CARGO) test --locked --test package --test container -- --ignored the_arm64_

# bpfsnap against its peers (bpftrace, bpftool, prometheus_client), measured
# side by side in one run; prints the table (BENCHMARKS.md). As root.
bench: test-deps
	CARGO="$(CARGO)" python3 bench/bench.py

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

fmt:
	$(CARGO) fmt

# Regenerate man/ and completions/ from the clap definition.
docs:
	BPFSNAP_UPDATE_DOCS=1 $(CARGO) test --locked --test docs

# Compile examples/NAME.bpf.c into examples/NAME.bpf.o, beside the configs, so
# `bpfsnap run examples/NAME.toml` works from the source tree. build.rs compiles
# them (with the same flags and headers as the built-ins) into the build
# script's OUT_DIR/examples; cargo's JSON messages say where that is.
examples: deps
	mkdir -p target
	$(CARGO) build --release --locked --message-format=json-render-diagnostics > target/examples-build.json
	python3 -c 'import json, os, shutil, sys; \
	  outs = [m["out_dir"] + "/examples" for m in map(json.loads, open("target/examples-build.json")) \
	          if m.get("reason") == "build-script-executed" and os.path.isdir(m["out_dir"] + "/examples")]; \
	  outs or sys.exit("make examples: no examples/ in the output of the build script"); \
	  objects = sorted(f for f in os.listdir(outs[-1]) if f.endswith(".bpf.o")); \
	  [shutil.copy(os.path.join(outs[-1], f), "examples/") for f in objects]; \
	  print("examples/:", *objects)'

# Kernel types for CO-RE, from this machine's BTF, for its architecture;
# with ARCH=arm64, from the BTF of Debian's arm64 kernel package, on any
# machine (tools/gen-vmlinux.sh, which pins the package).
ifneq ($(CARGO_TARGET),)
vmlinux: test-deps
	tools/gen-vmlinux.sh
else
vmlinux: test-deps
	arch=$$(uname -m); dir=bpf/vmlinux/$$arch; mkdir -p $$dir && \
	{ printf '%s\n' "/* vmlinux.h for $$arch: kernel type definitions for CO-RE BPF programs." \
	    ' *' \
	    " * Generated from the BTF of Linux $$(uname -r) ($$arch); regenerate on a machine" \
	    ' * of the target architecture with:' \
	    ' *     make vmlinux      (= bpftool btf dump file /sys/kernel/btf/vmlinux format c)' \
	    ' * It is the whole dump; CO-RE relocations make the compiled programs work on' \
	    ' * other kernel versions, where the types they use may differ in layout.' \
	    ' */'; \
	  bpftool btf dump file /sys/kernel/btf/vmlinux format c; } > $$dir/vmlinux.h.new && \
	mv $$dir/vmlinux.h.new $$dir/vmlinux.h
endif

# Regenerate the syscall number → name table from the Linux UAPI headers.
syscall-table:
	tools/gen-syscall-table.py
	$(CARGO) fmt

# Regenerate the errno number → name table from the Linux UAPI headers.
errno-table:
	tools/gen-errno-table.py

clean:
	$(CARGO) clean

# --- Reliability (RELIABILITY.md) -------------------------------------------

# Fuzzing: fuzz/ is a cargo-fuzz project of its own (libFuzzer, coverage-
# guided). No sanitizer: the targets are safe Rust (the C code of libbpf is
# not reached), so instrumentation for coverage and debug assertions
# (overflow checks) suffice, and it builds with the stable toolchain.
FUZZ_TARGETS := config_parse decode_keys histograms encode
FUZZ_FLAGS := --sanitizer none --debug-assertions
# `make fuzz`: executions per target (and an optional bound in seconds, 0: none).
FUZZ_RUNS ?= 10000000
FUZZ_TIME ?= 0
# `make fuzz-smoke` (part of `make test`): seconds per target.
FUZZ_SMOKE_TIME ?= 5
# Inputs up to 4 KiB for configs, 1 KiB for maps, 256 bytes for histograms
# (the map is made of the input: longer ones only slow each execution down;
# checking a histogram's text costs most, and 256 bytes already give ~24
# keys over every bucket shape).
FUZZ_OPTIONS = -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
	-max_len=$$(case $$t in config_parse) echo 4096;; histograms) echo 256;; *) echo 1024;; esac)

fuzz fuzz-smoke: SHELL := /bin/bash

cargo-fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked --version 0.13.2

# Each target for a few seconds over the kept corpus (new inputs go to a
# scratch directory, the tree stays clean); a crash fails the build.
fuzz-smoke: cargo-fuzz
	cd fuzz && $(CARGO) fuzz build $(FUZZ_FLAGS)
	set -eo pipefail; for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/target/smoke-corpus/$$t fuzz/corpus/$$t; \
	  log=fuzz/target/smoke-$$t.log; \
	  if ! (cd fuzz && $(CARGO) fuzz run $(FUZZ_FLAGS) $$t target/smoke-corpus/$$t corpus/$$t -- \
	    $(FUZZ_OPTIONS) -max_total_time=$(FUZZ_SMOKE_TIME)) > $$log 2>&1; then \
	    tail -40 $$log; echo "fuzz-smoke: $$t failed (whole output: $$log)"; exit 1; \
	  fi; \
	  grep -E '^(Done|stat::number_of_executed_units)|panicked|ERROR|SUMMARY|artifact' $$log; \
	done

# Each target for FUZZ_RUNS executions (FUZZ_TIME seconds at most, if set),
# growing fuzz/corpus; then `make fuzz-cmin` keeps it small.
fuzz: cargo-fuzz
	cd fuzz && $(CARGO) fuzz build $(FUZZ_FLAGS)
	set -eo pipefail; for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/corpus/$$t; \
	  (cd fuzz && $(CARGO) fuzz run $(FUZZ_FLAGS) $$t corpus/$$t -- \
	    $(FUZZ_OPTIONS) -runs=$(FUZZ_RUNS) -max_total_time=$(FUZZ_TIME)) 2>&1 \
	    | grep -E '^(Done|stat::)|panicked|ERROR|SUMMARY|artifact'; \
	done

fuzz-cmin: cargo-fuzz
	for t in $(FUZZ_TARGETS); do (cd fuzz && $(CARGO) fuzz cmin $(FUZZ_FLAGS) $$t corpus/$$t); done

# Soak: interval mode for SOAK_WINDOWS windows of SOAK_INTERVAL with the
# default set under load; RSS, open fds and loaded programs flat, every
# window written (soak/soak.sh). `make test` runs 100 windows of it.
SOAK_WINDOWS ?= 1000
SOAK_INTERVAL ?= 100ms
soak: build
	SOAK_WINDOWS=$(SOAK_WINDOWS) SOAK_INTERVAL=$(SOAK_INTERVAL) soak/soak.sh $(BIN)
