#!/usr/bin/env bash
# Soak test (`make soak`; `make test` runs 100 windows of it): `bpfsnap run --interval`
# for SOAK_WINDOWS windows of SOAK_INTERVAL with the default set while a load
# generator execs programs, writes and fsyncs files, opens loopback TCP
# connections and makes system calls. Prints bpfsnap's RSS, open file
# descriptors, BPF programs held and threads at the start (after the first
# window), every 100 windows and at the end, and fails unless they stay flat,
# every window was written, every version of the file was complete, and
# nothing stays loaded after exit. As root.
set -euo pipefail

bin=${1:?usage: soak.sh PATH/TO/bpfsnap}
windows=${SOAK_WINDOWS:-1000}
(( windows >= 20 )) || { echo "soak: SOAK_WINDOWS must be at least 20" >&2; exit 2; }
interval=${SOAK_INTERVAL:-100ms}
# RSS may grow this much over the run (allocator warm-up, lazily read tables).
rss_slack_kib=${SOAK_RSS_SLACK_KIB:-4096}

say() { echo "soak: $*"; }
die() { echo "soak: FAIL: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || die "run as root (it loads BPF programs)"

work=$(mktemp -d)
pids=()
cleanup() {
  local status=$?
  if (( status != 0 )) && [[ -s $work/stderr ]]; then
    echo "soak: bpfsnap's last words:" >&2
    tail -5 "$work/stderr" >&2
  fi
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

loaded_ids() { bpftool prog show --json | python3 -c 'import json,sys; print(*sorted(p["id"] for p in json.load(sys.stdin)))'; }
held_ids() { # ids of the BPF programs process $1 holds a descriptor of
  local fd
  for fd in /proc/"$1"/fd/*; do
    # if, not &&: a last fd that is no program must not fail the pipeline
    # (set -e and pipefail would end the soak without a word).
    if [[ $(readlink "$fd" 2>/dev/null) == anon_inode:bpf-prog ]]; then
      awk '/^prog_id:/ {print $2}' /proc/"$1"/fdinfo/"${fd##*/}"
    fi
  done | sort -u
}
held_programs() { held_ids "$1" | grep -c . || true; }
measure() { # rss_kib fds programs threads of process $1, stopped meanwhile
  [[ -d /proc/$1 ]] || die "bpfsnap exited early ($(written) windows written): $(tail -3 "$work/stderr")"
  local rss threads fds progs
  kill -STOP "$1" 2>/dev/null || die "bpfsnap exited early ($(written) windows written): $(tail -3 "$work/stderr")"
  rss=$(awk '/^VmRSS:/ {print $2}' /proc/"$1"/status)
  threads=$(awk '/^Threads:/ {print $2}' /proc/"$1"/status)
  fds=$(ls /proc/"$1"/fd | wc -l)
  progs=$(held_programs "$1")
  kill -CONT "$1"
  echo "$rss $fds $progs $threads"
}
written() { # windows written so far; 0 until bpfsnap's stderr exists
  local n
  n=$(grep -c '^bpfsnap: wrote ' "$work/stderr" 2>/dev/null) || true
  echo "${n:-0}"
}

# The load: execs, exits, file writes with fsync (block I/O), loopback TCP,
# signals, and plain system calls, until killed.
python3 - "$work" <<'PY' &
import os, socket, subprocess, sys, time, signal
work = sys.argv[1]
server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen(64)
port = server.getsockname()[1]
while True:
    subprocess.run(["/bin/true"])
    with open(os.path.join(work, "load"), "wb") as f:
        f.write(os.urandom(65536)); f.flush(); os.fsync(f.fileno())
    c = socket.create_connection(("127.0.0.1", port)); s, _ = server.accept(); c.close(); s.close()
    os.kill(os.getpid(), signal.SIGWINCH)
    for _ in range(200):
        os.getppid()
PY
pids+=($!)

output="$work/bpfsnap.prom"
"$bin" run -v --interval "$interval" --count "$windows" --output "$output" 2>"$work/stderr" &
snap=$!
pids+=("$snap")

# A reader checking every version of the file is complete.
python3 - "$output" "$snap" <<'PY' &
import os, re, sys, time
path, pid = sys.argv[1], int(sys.argv[2])
# A self metric written last in name order but one, with its output label.
failures = re.compile(r"\nbpfsnap_write_failures_total[{ ]")
seen, reads, appeared = set(), 0, False
while os.path.exists(f"/proc/{pid}"):
    try:
        text = open(path).read()
    except FileNotFoundError:
        if appeared:
            sys.exit("soak: FAIL: the file went missing between rewrites")
        continue
    appeared, reads = True, reads + 1
    if not (text.startswith("# HELP ") and text.endswith("\n") and failures.search(text)):
        sys.exit("soak: FAIL: a reader saw a partial file")
    seen.add(hash(text))
    time.sleep(0.005)
print(f"soak: reader: {reads} reads, {len(seen)} distinct versions, all complete")
PY
reader=$!

wait_written() { # until $1 windows are written (or bpfsnap exits)
  while (( $(written) < $1 )); do
    kill -0 "$snap" 2>/dev/null || return 0
    sleep 0.05
  done
}

wait_written 1
m=$(measure "$snap") || exit 1
read -r rss0 fds0 progs0 threads0 <<<"$m"
say "start (window 1):  rss ${rss0} KiB, fds ${fds0}, BPF programs held ${progs0}, threads ${threads0}"
wait_written 10
m=$(measure "$snap") || exit 1
read -r rss10 fds10 progs10 threads10 <<<"$m"
say "warm (window 10):  rss ${rss10} KiB, fds ${fds10}, BPF programs held ${progs10}, threads ${threads10}"
started=$(date +%s.%N)
# The end is measured 10 windows before the last, well before the process
# starts detaching (it is stopped while measured).
last=$((windows - 10))
for ((n = 100; n < last; n += 100)); do
  wait_written "$n"
  m=$(measure "$snap") || exit 1
  read -r rss fds progs threads <<<"$m"
  say "window $n: rss ${rss} KiB, fds ${fds}, BPF programs held ${progs}, threads ${threads}"
done
wait_written "$last"
m=$(measure "$snap") || exit 1
read -r rss1 fds1 progs1 threads1 <<<"$m"
ours=$(held_ids "$snap")
say "end (window $last): rss ${rss1} KiB, fds ${fds1}, BPF programs held ${progs1}, threads ${threads1}"

status=0
wait "$snap" || status=$?
ended=$(date +%s.%N)
wait "$reader" || die "the reader saw a missing or partial file"
n=$(written)
failures=$(grep -c 'retrying in' "$work/stderr" || true)
say "bpfsnap exited $status after $n windows written ($failures failed writes), $(python3 -c "print(f'{($ended - $started):.1f}')") s from window 10"

(( status == 0 )) || { tail -5 "$work/stderr" >&2; die "bpfsnap exited $status"; }
(( n == windows )) || die "$n of $windows windows written"
(( failures == 0 )) || die "$failures writes failed"
(( fds1 == fds0 )) || die "open fds went from $fds0 to $fds1"
(( progs1 == progs0 )) || die "BPF programs held went from $progs0 to $progs1"
(( threads1 == threads0 )) || die "threads went from $threads0 to $threads1"
(( rss1 <= rss10 + rss_slack_kib )) || die "RSS grew from $rss10 KiB (window 10) to $rss1 KiB"

# Nothing of ours stays loaded (the kernel frees programs asynchronously;
# programs other processes loaded meanwhile are not ours to judge).
for _ in $(seq 600); do
  left=$(comm -12 <(echo "$ours") <(loaded_ids | tr ' ' '\n' | sort) | grep -c . || true)
  (( left == 0 )) && break
  sleep 0.1
done
(( left == 0 )) || die "$left BPF programs still loaded after exit"
say "OK: $windows windows, rss ${rss0}/${rss10} -> ${rss1} KiB, fds $fds0 -> $fds1, programs $progs0 -> $progs1, threads $threads0 -> $threads1, nothing left loaded"
