# bpfsnap — run `make run` or `make test` as root on Debian 12; both install
# what is missing first (tools/deps.sh).

CARGO ?= cargo
BIN := target/release/bpfsnap
# Kernel tests must run in `make test`: never let them skip.
export BPFSNAP_REQUIRE_KERNEL_TESTS := 1

.PHONY: all deps build run test lint fmt docs examples vmlinux syscall-table errno-table clean

all: build

deps:
	@tools/deps.sh

build: deps
	$(CARGO) build --release --locked

# A 5 s snapshot of the default programs, to stdout.
run: build
	$(BIN) run --for 5s --output -

# Everything: format, lints, unit tests and the kernel/promtool/node_exporter
# integration tests (as root).
test: deps lint
	$(CARGO) test --locked

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

# Regenerate the kernel type header from this machine's BTF.
vmlinux:
	mkdir -p bpf/vmlinux/$$(uname -m)
	{ sed -n '1,/\*\//p' bpf/vmlinux/x86_64/vmlinux.h; \
	  bpftool btf dump file /sys/kernel/btf/vmlinux format c; } > bpf/vmlinux/$$(uname -m)/vmlinux.h.new
	mv bpf/vmlinux/$$(uname -m)/vmlinux.h.new bpf/vmlinux/$$(uname -m)/vmlinux.h

# Regenerate the syscall number → name table from the Linux UAPI headers.
syscall-table:
	tools/gen-syscall-table.py
	$(CARGO) fmt

# Regenerate the errno number → name table from the Linux UAPI headers.
errno-table:
	tools/gen-errno-table.py

clean:
	$(CARGO) clean
