# bpfsnap — run `make run` or `make test` as root on Debian 12; both install
# what is missing first (tools/deps.sh).

CARGO ?= cargo
BIN := target/release/bpfsnap
# Kernel tests must run in `make test`: never let them skip.
export BPFSNAP_REQUIRE_KERNEL_TESTS := 1

.PHONY: all deps build run test lint fmt docs vmlinux syscall-table errno-table clean

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
