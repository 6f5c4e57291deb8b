#!/usr/bin/env bash
# The kernel matrix (`make vm-test`, part of `make test`): for each kernel of
# tools/vm/kernels.conf, boots it in QEMU over this machine's root and runs
# the tests of tools/vm/suite.txt inside, built here. The host's own kernel is
# covered by `cargo test`. Fails loudly if a kernel cannot be fetched or
# booted or a test fails: nothing is skipped.
#
#   tools/vm/matrix.sh [NAME...]     (default: every kernel)
#
# BPFSNAP_VM_SUITE names another suite file (for a quicker look at one test).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
vm_dir=${BPFSNAP_VM_DIR:-$root/target/vm}
cd "$root"
say() { echo "vm-matrix: $*" >&2; }

tools/vm/fetch.sh

# The test binaries, by target name (`lib` for the library's unit tests).
binaries=$vm_dir/binaries.txt
mkdir -p "$vm_dir"
"${CARGO:-cargo}" test --locked --no-run --message-format=json 2> "$vm_dir/build.log" |
  python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        t = m["target"]
        name = "lib" if t["kind"] == ["lib"] else t["name"]
        if t["kind"] != ["bin"]:
            print(name, m["executable"])' > "$binaries" || {
  tail -30 "$vm_dir/build.log" >&2
  exit 1
}

suite=$vm_dir/suite
grep -vE '^\s*(#|$)' "${BPFSNAP_VM_SUITE:-tools/vm/suite.txt}" | while read -r name args; do
  path=$(awk -v n="$name" '$1 == n {print $2}' "$binaries")
  [[ -n $path ]] || { say "tools/vm/suite.txt names $name, which is no test target"; exit 1; }
  echo "$path $args"
done > "$suite"

wanted=("$@")
# Kernels boot side by side, each VM on a host thread of its own (TCG runs
# single-threaded): BPFSNAP_VM_JOBS at once (default: one per CPU), or as
# many as the file BPFSNAP_VM_JOBS_FILE says when the next one is due (so a
# caller can allow more once its own work is done).
jobs_max() {
  local jobs
  if [[ -n ${BPFSNAP_VM_JOBS_FILE:-} ]] && jobs=$(cat "$BPFSNAP_VM_JOBS_FILE" 2>/dev/null) &&
    [[ $jobs =~ ^[1-9][0-9]*$ ]]; then
    echo "$jobs"
  else
    echo "${BPFSNAP_VM_JOBS:-$(nproc)}"
  fi
}

# run_kernel NAME MIN_BUILTINS: boots it and runs the suite; its status and
# how long it took go to OUT/status and OUT/took.
run_kernel() {
  local name=$1 min_builtins=$2 out=$vm_dir/out/$1 start status=0
  mkdir -p "$out"
  rm -f "$out/status" "$out/took"
  say "kernel $name: booting (results in $out/log)"
  start=$(date +%s)
  tools/vm/boot.sh "$name" "$out" tools/vm/guest-suite.sh "$suite" "$name" "$min_builtins" \
    2> "$out/boot.log" || status=$?
  echo $(($(date +%s) - start)) > "$out/took"
  echo "$status" > "$out/status"
}

names=()
while read -r name _suite _package _version min_builtins; do
  if ((${#wanted[@]})) && [[ ! " ${wanted[*]} " == *" $name "* ]]; then
    continue
  fi
  names+=("$name")
  # A poll, not a wait for the next VM to end: the file may allow more first.
  while (($(jobs -rp | wc -l) >= $(jobs_max))); do sleep 2; done
  run_kernel "$name" "$min_builtins" &
done < <(grep -vE '^\s*(#|$)' tools/vm/kernels.conf)
wait

failed=()
summary=()
for name in "${names[@]}"; do
  out=$vm_dir/out/$name
  status=$(cat "$out/status" 2>/dev/null || echo 125)
  took=$(cat "$out/took" 2>/dev/null || echo "?")
  sed "s/^/  [$name] /" "$out/boot.log" >&2 2>/dev/null || true
  grep -E '^(===|test result|FAILED|failures:|    [a-z_:]+$)|panicked' "$out/log" 2>/dev/null | sed "s/^/  [$name] /" >&2 || true
  if ((status == 0)); then
    summary+=("$name: passed in ${took}s")
  else
    summary+=("$name: FAILED (status $status) in ${took}s; whole output: $out/log")
    failed+=("$name")
  fi
done

printf 'vm-matrix: %s\n' "${summary[@]}" >&2
((${#failed[@]} == 0)) || { say "failed on: ${failed[*]}"; exit 1; }
