#!/usr/bin/env bash
# The tests of `make test`, after lint and the fuzz smoke test: the host's
# (`cargo test`, against this machine's kernel), a short soak, and the
# kernel matrix (tools/vm/matrix.sh: Debian's kernels in VMs).
#
# The matrix's VMs run under software emulation, each on one host thread,
# while the host's tests mostly wait on processes of their own: side by
# side they take about as long as the matrix alone, which alone is most of
# `make test`'s time. Its output goes to target/vm/matrix.log and is printed
# once it ends; a failure of either fails the whole, after both have ended.
#
#   tools/test.sh [KERNEL...]     (default: every kernel of the matrix)
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo=${CARGO:-cargo}
log=target/vm/matrix.log
mkdir -p target/vm

# The test binaries, built once for both (the matrix builds them too, and
# would wait for this build's lock).
"$cargo" test --locked --no-run || exit 1

echo "test: the kernel matrix runs beside the host's tests ($log)" >&2
# One VM at a time: the host's tests take the other CPU.
BPFSNAP_VM_JOBS=${BPFSNAP_VM_JOBS:-1} CARGO="$cargo" tools/vm/matrix.sh "$@" > "$log" 2>&1 &
matrix=$!

failed=()
BPFSNAP_MIN_BUILTINS=all "$cargo" test --locked || failed+=("the host's tests")
# 100 windows of the soak, with the test build's binary.
SOAK_WINDOWS=100 soak/soak.sh target/debug/bpfsnap || failed+=("the soak")

wait "$matrix" || failed+=("the kernel matrix")
grep -E '^(vm-matrix|vm-boot|vm-fetch):|^  \[' "$log" >&2 || true
if ((${#failed[@]})); then
  echo "test: FAILED: ${failed[*]} (the matrix's whole output: $log)" >&2
  exit 1
fi
echo "test: all passed" >&2
