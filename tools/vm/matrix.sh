#!/usr/bin/env bash
# The kernel matrix (`make vm-test`, part of `make test`): for each kernel of
# tools/vm/kernels.conf, boots it in QEMU over this machine's root and runs
# the tests of tools/vm/suite.txt inside, built here (cross-built for the
# arm64 legs, kernels named *-arm64, which boot over an arm64 root:
# tools/vm/boot-arm64.sh). The host's own kernel is
# covered by `cargo test`. Fails loudly if a kernel cannot be fetched or
# booted or a test fails: nothing is skipped.
#
#   tools/vm/matrix.sh [NAME...]     (default: every kernel but the *-arm64 ones)
#
# BPFSNAP_VM_SUITE names another suite file (for a quicker look at one test).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
vm_dir=${BPFSNAP_VM_DIR:-$root/target/vm}
cd "$root"
say() { echo "vm-matrix: $*" >&2; }

# The architecture of kernel NAME's guest: the arm64 legs are named NAME-arm64.
arch_of() { [[ $1 == *-arm64 ]] && echo aarch64 || echo "$(uname -m)"; }

# build_suite ARCH: the test binaries for ARCH (cross-built for aarch64:
# .cargo/config.toml), by target name (`lib` for the library's unit tests),
# and the suite file of their paths, $vm_dir/suite-ARCH.
build_suite() {
  local arch=$1 target=() binaries=$vm_dir/binaries-$1.txt
  [[ $arch == "$(uname -m)" ]] || target=(--target "$arch-unknown-linux-gnu")
  mkdir -p "$vm_dir"
  say "building the test binaries ($arch)"
  "${CARGO:-cargo}" test --locked --no-run "${target[@]}" --message-format=json 2> "$vm_dir/build-$arch.log" |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        t = m["target"]
        name = "lib" if t["kind"] == ["lib"] else t["name"]
        if t["kind"] != ["bin"]:
            print(name, m["executable"])' > "$binaries" || {
    tail -30 "$vm_dir/build-$arch.log" >&2
    exit 1
  }
  grep -vE '^\s*(#|$)' "${BPFSNAP_VM_SUITE:-tools/vm/suite.txt}" | while read -r name args; do
    path=$(awk -v n="$name" '$1 == n {print $2}' "$binaries")
    [[ -n $path ]] || { say "tools/vm/suite.txt names $name, which is no test target"; exit 1; }
    echo "$path $args"
  done > "$vm_dir/suite-$arch"
}

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
  tools/vm/boot.sh "$name" "$out" tools/vm/guest-suite.sh "$vm_dir/suite-$(arch_of "$name")" "$name" "$min_builtins" \
    2> "$out/boot.log" || status=$?
  echo $(($(date +%s) - start)) > "$out/took"
  echo "$status" > "$out/status"
}

names=()
declare -A min_of=() arches=()
while read -r name _suite _package _version min_builtins; do
  # Named ones, or by default the host architecture's (the arm64 legs take
  # longer under emulation than `make test` allows: `make vm-test-arm64`).
  if ((${#wanted[@]})); then
    [[ " ${wanted[*]} " == *" $name "* ]] || continue
  elif [[ $name == *-arm64 ]]; then
    continue
  fi
  names+=("$name")
  min_of[$name]=$min_builtins
  arches[$(arch_of "$name")]=1
done < <(grep -vE '^\s*(#|$)' tools/vm/kernels.conf)
((${#names[@]})) || { say "no kernel named ${wanted[*]} in tools/vm/kernels.conf"; exit 1; }
tools/vm/fetch.sh "${names[@]}"
for arch in "${!arches[@]}"; do build_suite "$arch"; done

for name in "${names[@]}"; do
  # A poll, not a wait for the next VM to end: the file may allow more first.
  while (($(jobs -rp | wc -l) >= $(jobs_max))); do sleep 2; done
  run_kernel "$name" "${min_of[$name]}" &
done
wait

# The lines of a guest's log worth reading here: each binary's start, end
# and result, and of a failure where it panicked, the first line of its
# message and an assertion's two sides (the message may be a whole output).
summarise() {
  awk '/^(===|test result|FAILED|failures:|    [a-z_:]+$)/ || /^  left: |^ right: / { print; next }
       /panicked at/ { print; message = 1; next }
       message { print; message = 0 }' "$1" 2>/dev/null
}

failed=()
summary=()
for name in "${names[@]}"; do
  out=$vm_dir/out/$name
  status=$(cat "$out/status" 2>/dev/null || echo 125)
  took=$(cat "$out/took" 2>/dev/null || echo "?")
  sed "s/^/  [$name] /" "$out/boot.log" >&2 2>/dev/null || true
  summarise "$out/log" | sed "s/^/  [$name] /" >&2 || true
  if ((status == 0)); then
    summary+=("$name: passed in ${took}s")
  else
    summary+=("$name: FAILED (status $status) in ${took}s; whole output: $out/log")
    failed+=("$name")
  fi
done

printf 'vm-matrix: %s\n' "${summary[@]}" >&2
((${#failed[@]} == 0)) || { say "failed on: ${failed[*]}"; exit 1; }
