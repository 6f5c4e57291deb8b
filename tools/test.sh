#!/usr/bin/env bash
# The tests of `make test`, after lint and the fuzz smoke test: the host's
# (`cargo test`, against this machine's kernel), a short soak, and the
# kernel matrix (tools/vm/matrix.sh: Debian's kernels in VMs).
#
# The matrix's VMs run under software emulation, each on one host thread:
# one beside the host's tests (two would starve them: a test writing 1,000
# windows then missed its minute), two at a time once those are done.
# Measured on 2 cores: 5.10 and 6.12 side by side took 840 s and 700 s, one
# after the other 1120 s; the matrix is most of `make test`'s time. Its
# output goes to target/vm/matrix.log and is printed once it ends; a failure
# of either fails the whole, after both have ended.
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
jobs_file=target/vm/jobs
echo 1 > "$jobs_file"
BPFSNAP_VM_JOBS_FILE=$jobs_file CARGO="$cargo" tools/vm/matrix.sh "$@" > "$log" 2>&1 &
matrix=$!

failed=()
BPFSNAP_MIN_BUILTINS=all "$cargo" test --locked || failed+=("the host's tests")
# 100 windows of the soak, with the test build's binary.
SOAK_WINDOWS=100 soak/soak.sh target/debug/bpfsnap || failed+=("the soak")
echo "${BPFSNAP_VM_JOBS:-2}" > "$jobs_file"

wait "$matrix" || failed+=("the kernel matrix")
grep -E '^(vm-matrix|vm-boot|vm-fetch):|^  \[' "$log" >&2 || true
if ((${#failed[@]})); then
  echo "test: FAILED: ${failed[*]} (the matrix's whole output: $log)" >&2
  exit 1
fi
echo "test: all passed" >&2
