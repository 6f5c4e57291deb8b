#!/usr/bin/env python3
"""`make bench`: bpfsnap against its peers, each figure measured side by side
with its peer in the same run (the machine is shared and noisy: absolute
times drift, ratios measured together hold).

Prints a table — figure, bpfsnap, peer, ratio, goal, met? — and writes it to
bench/build/results.md (and the raw numbers to bench/build/results.json).
Benchmarks never fail on a missed goal: they print it. Run as root; installs
bpftrace and Python's prometheus_client when missing, builds what it needs,
and stops every process (so every BPF program) it started.

    bench/bench.py [--quick] [--only probe,snapshot,encode,startup,window,serve] [--shapes a,b,...]
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
BUILD = BENCH / "build"
OUT = BUILD / "out"
# BPFSNAP_BIN: measure another build of bpfsnap (e.g. one with a patch).
BPFSNAP = Path(os.environ.get("BPFSNAP_BIN", ROOT / "target" / "release" / "bpfsnap"))
CARGO = os.environ.get("CARGO", "cargo")

BT_COUNT = "tracepoint:raw_syscalls:sys_enter { @[args->id] = count(); }"
BT_HIST = (
    "tracepoint:raw_syscalls:sys_enter { @start[tid] = nsecs; } "
    "tracepoint:raw_syscalls:sys_exit /@start[tid]/ "
    "{ @ns[args->id] = hist(nsecs - @start[tid]); delete(@start[tid]); }"
)
# Printed once every probe is attached (bpftrace runs BEGIN after attaching).
BT_READY = ' BEGIN { printf("attached\\n"); }'
BPFSNAP_READY = "bpfsnap: sampling"


def log(message):
    print(f"bench: {message}", file=sys.stderr, flush=True)


def run(argv, **kwargs):
    kwargs.setdefault("check", True)
    return subprocess.run([str(a) for a in argv], **kwargs)


# ---------------------------------------------------------------- set-up


def apt_install(*packages):
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log(f"installing {' '.join(packages)}")
    run(["apt-get", "update", "-qq"], env=env, check=False)
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages], env=env,
        stdout=subprocess.DEVNULL)


def ensure_tools():
    if os.geteuid() != 0:
        sys.exit("bench: run as root (make bench): it loads BPF programs")
    if not shutil.which("bpftrace"):
        try:
            apt_install("bpftrace")
        except subprocess.CalledProcessError as err:
            log(f"bpftrace could not be installed ({err}); its figures will be n/a")
    for tool, package in (("gcc", "gcc"), ("clang", "clang"), ("bpftool", "bpftool")):
        if not shutil.which(tool):
            apt_install(package)
    ensure_prometheus_client()


def ensure_prometheus_client():
    """prometheus_client for the interpreter running this script: Debian's
    package for Debian's python3, else pip (with --break-system-packages
    where the system Python is externally managed, as on Debian 12)."""
    probe = [sys.executable, "-c", "import prometheus_client"]
    if run(probe, check=False, stderr=subprocess.DEVNULL).returncode == 0:
        return
    if sys.executable.startswith("/usr/bin/") and shutil.which("apt-get"):
        try:
            apt_install("python3-prometheus-client")
        except subprocess.CalledProcessError:
            pass
        if run(probe, check=False, stderr=subprocess.DEVNULL).returncode == 0:
            return
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "prometheus_client"]
    if run(pip, check=False).returncode != 0:
        run(pip + ["--break-system-packages"])
    run(probe)


def cargo_messages(args):
    """Runs cargo with JSON messages; returns them."""
    result = run([CARGO, *args, "--message-format=json-render-diagnostics"], cwd=ROOT,
                 stdout=subprocess.PIPE, text=True)
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def build(names):
    """bpfsnap, the Rust bench programs, the C load program and the bench BPF
    objects with their configs (one directory per config, as bpfsnap wants)."""
    log("building bpfsnap (release) and the bench programs")
    messages = cargo_messages(["build", "--release", "--locked"])
    includes = [
        Path(m["out_dir"]) / "include"
        for m in messages
        if m.get("reason") == "build-script-executed"
        and "bpfsnap" in m.get("package_id", "")
        and (Path(m["out_dir"]) / "include" / "bpf" / "bpf_helpers.h").exists()
    ]
    if not includes:
        sys.exit("bench: no libbpf headers in the output of bpfsnap's build script")
    messages = cargo_messages(["bench", "--no-run", "--locked", "--bench", "encode",
                               "--bench", "maploop", "--bench", "snapshot"])
    exes = {
        m["target"]["name"]: m["executable"]
        for m in messages
        if m.get("reason") == "compiler-artifact" and m.get("executable")
    }
    OUT.mkdir(parents=True, exist_ok=True)
    run(["gcc", "-O2", "-Wall", "-o", BUILD / "load", BENCH / "load.c"])

    arch = platform.machine()
    target = {"x86_64": "x86", "aarch64": "arm64"}[arch]

    def config(name, source, spec, defines=(), max_series=None):
        directory = BUILD / name
        directory.mkdir(parents=True, exist_ok=True)
        stem = spec.name[: -len(".toml")]
        run(["clang", "-g", "-O2", "-target", "bpf", "-Wall", "-fno-stack-protector",
             f"-D__TARGET_ARCH_{target}", "-I", ROOT / "bpf", "-I", ROOT / "bpf" / "vmlinux" / arch,
             "-I", includes[-1], *defines, "-c", source, "-o", directory / f"{stem}.bpf.o"])
        text = spec.read_text()
        if max_series:
            # Every key in the text, where bpfsnap caps series per metric
            # (`max_series`); left out where this bpfsnap has no such key.
            capped = text.replace("\n[[metrics.counters.labels]]",
                                  f"\nmax_series = {max_series}\n\n[[metrics.counters.labels]]", 1)
            (directory / spec.name).write_text(capped)
            (directory / spec.name).chmod(0o644)
            if run([BPFSNAP, "check", directory / spec.name], check=False, capture_output=True).returncode:
                max_series = None
        if not max_series:
            (directory / spec.name).write_text(text)
        # bpfsnap refuses configs and objects others could write.
        for path in directory.iterdir():
            path.chmod(0o644)
        return directory / spec.name

    configs = {"empty": config("empty", BENCH / "empty.bpf.c", BENCH / "empty.toml")}
    for shape in shapes_named(names):
        for size in shape.sizes:
            configs[shape.name, size] = config(
                f"keys-{shape.name}-{size}", BENCH / "keys.bpf.c", BENCH / shape.spec,
                [f"-DMAX_ENTRIES={size}", f"-DSHAPE={shape.define}"], max_series=size)
    return exes, configs


# ---------------------------------------------------------------- processes

LIVE = []


class Proc:
    """A loader (bpfsnap or bpftrace) with its output in a file."""

    def __init__(self, name, argv, rss=True, resend=None):
        self.name = name
        # bpftrace 0.17 has lost a SIGINT at its stop (2026-12-07: it
        # waited 5 minutes, until a second one): a loader given `resend`
        # seconds gets the signal again after each.
        self.resend = resend
        self.log_path = OUT / f"{name}.log"
        self.rss_path = OUT / f"{name}.rss"
        self.rss_path.unlink(missing_ok=True)
        self.log = open(self.log_path, "w")
        # Through `load rss`, which passes signals on and records the peak
        # RSS; not when timing start-up: a loader started by that wrapper
        # took 12 ms longer to attach the default set (measured, not
        # understood), which would count against whichever starts faster.
        wrapper = [BUILD / "load", "rss", self.rss_path] if rss else []
        self.started = time.monotonic()
        self.proc = subprocess.Popen([str(a) for a in [*wrapper, *argv]],
                                     stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.rusage = None
        LIVE.append(self)

    def output(self):
        return self.log_path.read_text(errors="replace")

    def wait_for(self, marker, timeout=120):
        """Seconds from the start until `marker` shows in the output."""
        deadline = self.started + timeout
        # Only what is new is read: re-reading a verbose log every
        # millisecond took a CPU from the loader being timed.
        wanted, seen, offset = marker.encode(), b"", 0
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                new = log.read()
            offset += len(new)
            seen = seen[-len(wanted):] + new
            if wanted in seen:
                return time.monotonic() - self.started
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{self.output()[-2000:]}")
            time.sleep(0.001)
        raise RuntimeError(f"{self.name}: no {marker!r} after {timeout} s:\n{self.output()[-2000:]}")

    def wait(self, timeout=300, resend=None):
        """Waits for the exit (sending signal `resend` again every
        self.resend seconds); returns seconds waited."""
        started = signalled = time.monotonic()
        while True:
            pid, status, rusage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                self.proc.returncode = os.waitstatus_to_exitcode(status)
                self.rusage = rusage
                LIVE.remove(self)
                self.log.close()
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                self.kill()
                timeout = float("inf")
            if resend and self.resend and time.monotonic() - signalled > self.resend:
                log(f"{self.name}: still running {self.resend} s after the signal: sending it again")
                self.proc.send_signal(resend)
                signalled = time.monotonic()
            time.sleep(0.0005)

    @property
    def pid(self):
        """The loader's pid (a child of `load rss`)."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        return int(children[0])

    def kill(self):
        """SIGKILL to the loader and to `load rss`, which cannot pass it on."""
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        except OSError:
            children = []
        for pid in children:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
        self.proc.kill()

    def stop(self, sig=signal.SIGINT):
        """Signals, waits; returns seconds from the signal to the exit."""
        self.proc.send_signal(sig)
        return self.wait(resend=sig)

    def check_exited_ok(self):
        """Raises, with the end of its output, if it exited with an error."""
        if self.proc.returncode != 0:
            raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n{self.output()[-2000:]}")

    @property
    def max_rss_mib(self):
        """Peak RSS of the loader itself (not of the process that forked it)."""
        return int(self.rss_path.read_text()) / 1024


def stop_all():
    for proc in list(LIVE):
        try:
            proc.stop()
        except Exception:  # noqa: BLE001 - best effort on the way out
            proc.kill()


def textfile(name):
    """The output file of bpfsnap run `name`, alone in its directory:
    bpfsnap refuses to write beside another file defining its metrics. Not
    there yet: a run into a file carries its counters on from the file it
    replaces, and each run here measures one snapshot on its own."""
    directory = OUT / name
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.prom"
    path.unlink(missing_ok=True)
    return path


def bpfsnap(name, args, output=None, rss=True):
    output = output or textfile(name)
    return Proc(name, [BPFSNAP, "run", "-v", *args, "--output", output], rss=rss)


def bpftrace_available():
    """None, or why bpftrace cannot run here."""
    if not shutil.which("bpftrace"):
        return "not installed"
    result = run(["bpftrace", "-e", BT_COUNT + ' interval:ms:100 { exit(); }'], check=False,
                 capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        lines = [l for l in result.stderr.splitlines() if "ERROR" in l and "RLIMIT" not in l]
        return (lines or result.stderr.splitlines() or ["failed"])[-1][:80]
    return None


def metric(text, name):
    """The value of series `name` in `text`, with or without labels (a
    textfile's self metrics carry `output`)."""
    match = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
    return float(match.group(1)) if match else None


# ---------------------------------------------------------------- figures


class Table:
    def __init__(self):
        self.rows = []
        self.notes = []

    def add(self, figure, ours, peer, ratio, goal, met, unit=""):
        self.rows.append((figure, ours, peer, ratio, goal, met, unit))

    def markdown(self):
        lines = ["| figure | bpfsnap | peer | ratio | goal | met? |", "|---|---|---|---|---|---|"]
        for figure, ours, peer, ratio, goal, met, _ in self.rows:
            lines.append(f"| {figure} | {ours} | {peer} | {ratio} | {goal} | {met} |")
        return "\n".join(lines)


def fmt(value, unit="", digits=None):
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if digits is None:
        digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2
    return f"{value:,.{digits}f}{unit}"


def verdict(ok):
    return "—" if ok is None else "yes" if ok else "**no**"


def probe_overhead(table, raw, configs, exes, quick, bt_missing, builtins):
    """ns per getpid call: no probe, the empty tp_btf floor, the built-ins and
    bpftrace; rounds interleave the conditions against drift."""
    # Rounds in two halves: the floor ratio from each must agree within 0.05
    # for the figure to be read (it is a few ns on top of a few hundred).
    calls, runs, rounds = (300_000, 3, 2) if quick else (1_000_000, 3, 20)
    load = BUILD / "load"
    # Their start-up is timed too: no `load rss` wrapper (see Proc).
    conditions = [("none", None),
                  ("empty", lambda: bpfsnap("empty", [configs["empty"], "--for", "1h"], rss=False))]
    conditions.append(("syscalls", lambda: bpfsnap("syscalls", ["--builtin", "syscalls", "--for", "1h"], rss=False)))
    if not bt_missing:
        conditions.append(("bpftrace count",
                           lambda: Proc("bpftrace-count", ["bpftrace", "-e", BT_COUNT + BT_READY],
                                        rss=False, resend=10)))
    if "syscall_latency" in builtins:
        conditions.append(("syscall_latency",
                           lambda: bpfsnap("syscall_latency", ["--builtin", "syscall_latency", "--for", "1h"],
                                           rss=False)))
        if not bt_missing:
            conditions.append(("bpftrace hist",
                               lambda: Proc("bpftrace-hist", ["bpftrace", "-e", BT_HIST + BT_READY],
                                        rss=False, resend=10)))
    # Paired: each condition's runs right after runs with no probe, its
    # added cost the difference of the two medians; then the median of
    # those differences over the rounds (the machine drifts between pairs).
    samples = {name: [] for name, _ in conditions}
    deltas = {name: [] for name, start in conditions if start}
    startup = {name: [] for name, _ in conditions}

    def getpid_runs():
        result = run([load, "getpid", calls, runs], stdout=subprocess.PIPE, text=True)
        return [float(x) for x in result.stdout.split()]

    for round_ in range(rounds):
        for name, start in conditions:
            if not start:
                continue
            log(f"probe overhead: {name} (round {round_ + 1}/{rounds})")
            before = getpid_runs()
            samples["none"].extend(before)
            proc = start()
            marker = "attached" if name.startswith("bpftrace") else BPFSNAP_READY
            startup[name].append(proc.wait_for(marker))
            during = getpid_runs()
            proc.stop()
            samples[name].extend(during)
            deltas[name].append(statistics.median(during) - statistics.median(before))
    median = {name: statistics.median(values) for name, values in samples.items()}
    added = {name: statistics.median(values) for name, values in deltas.items()}
    raw["probe"] = {"calls": calls, "samples": samples, "median_ns": median, "added_ns": added,
                    "deltas_ns": deltas, "startup_s": startup}

    table.add("getpid, no probe (ns/call)", fmt(median["none"]), "—", "—", "—", "—")
    bt = added.get("bpftrace count")
    table.add("probe: `syscalls` vs bpftrace count by id (added ns/event)", fmt(added["syscalls"]),
              fmt(bt) if bt is not None else f"n/a: {bt_missing}",
              fmt(added["syscalls"] / bt, "×") if bt else "—", "≤ 0.5×",
              verdict(added["syscalls"] / bt <= 0.5) if bt else "—")
    halves = [
        statistics.median(deltas["syscalls"][half::2]) / statistics.median(deltas["empty"][half::2])
        for half in (0, 1)
    ]
    agree = abs(halves[0] - halves[1]) <= 0.05
    raw["probe"]["floor_ratio_halves"] = halves
    table.add("probe: `syscalls` vs empty tp_btf program, the floor (added ns/event)",
              fmt(added["syscalls"]), fmt(added["empty"]), fmt(added["syscalls"] / added["empty"], "×"),
              "≤ 1.15×", verdict(added["syscalls"] <= 1.15 * added["empty"]))
    table.add("probe: the same ratio from odd and even rounds (must agree within 0.05)",
              fmt(halves[0], "×"), fmt(halves[1], "×"), fmt(abs(halves[0] - halves[1]), "", 3),
              "≤ 0.05", verdict(agree))
    if "syscall_latency" in added:
        bt = added.get("bpftrace hist")
        table.add("probe: `syscall_latency` vs bpftrace enter/exit hist() (added ns/call, 2 events)",
                  fmt(added["syscall_latency"]), fmt(bt) if bt is not None else f"n/a: {bt_missing}",
                  fmt(added["syscall_latency"] / bt, "×") if bt else "—", "≤ 0.5×",
                  verdict(added["syscall_latency"] / bt <= 0.5) if bt else "—")
        table.add("probe: `syscall_latency` vs 2 × empty tp_btf (added ns/call; info)",
                  fmt(added["syscall_latency"]), fmt(2 * added["empty"]),
                  fmt(added["syscall_latency"] / (2 * added["empty"]), "×"), "—", "—")
    else:
        table.add("probe: `syscall_latency` vs bpftrace hist()", "n/a: no such built-in", "—", "—", "≤ 0.5×", "—")
    return startup


def probe_all_cpus(table, raw, configs, quick):
    """The floor ratio with every CPU making system calls at once (one
    `load getpid` per CPU): contention on the probe's map shows here."""
    cpus = os.cpu_count() or 1
    calls, runs, rounds = (200_000, 3, 2) if quick else (500_000, 3, 8)
    load = BUILD / "load"

    def all_cpus():
        procs = [subprocess.Popen([load, "getpid", str(calls), str(runs)], stdout=subprocess.PIPE, text=True)
                 for _ in range(cpus)]
        per_call = []
        for proc in procs:
            out, _ = proc.communicate()
            per_call.extend(float(x) for x in out.split())
        return statistics.median(per_call)

    starts = {"empty": lambda: bpfsnap("empty", [configs["empty"], "--for", "1h"], rss=False),
              "syscalls": lambda: bpfsnap("syscalls", ["--builtin", "syscalls", "--for", "1h"], rss=False)}
    deltas = {name: [] for name in starts}
    for round_ in range(rounds):
        for name, start in starts.items():
            log(f"probe overhead, {cpus} CPUs at once: {name} (round {round_ + 1}/{rounds})")
            before = all_cpus()
            proc = start()
            proc.wait_for(BPFSNAP_READY)
            during = all_cpus()
            proc.stop()
            deltas[name].append(during - before)
    added = {name: statistics.median(values) for name, values in deltas.items()}
    raw["probe_all_cpus"] = {"cpus": cpus, "deltas_ns": deltas, "added_ns": added}
    table.add(f"probe, {cpus} CPUs at once: `syscalls` vs empty tp_btf (added ns/event)",
              fmt(added["syscalls"]), fmt(added["empty"]), fmt(added["syscalls"] / added["empty"], "×"),
              "≤ 1.15×", verdict(added["syscalls"] <= 1.15 * added["empty"]))


def map_id(pid, max_entries):
    """The id of the hash map (per CPU or not) with `max_entries` that
    process `pid` holds."""
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        fields = dict(re.findall(r"^(\w+):\s+(\S+)", info, re.M))
        if fields.get("map_type") in ("1", "5") and fields.get("max_entries") == str(max_entries):
            return int(fields["map_id"])
    raise RuntimeError(f"no hash map of {max_entries} entries held by pid {pid}")


SIZES = [10_000, 100_000, 1_000_000]


class Shape:
    """A key shape of the snapshot at scale (keys.bpf.c -DSHAPE=define).
    `distinct`: every key is a series of its own (else keys merge: ksym)."""

    def __init__(self, name, define, spec, metric, what, sizes, distinct=True, kernel_text=False):
        self.name, self.define, self.spec, self.metric = name, define, spec, metric
        self.what, self.sizes, self.distinct = what, sizes, distinct
        # Its keys start at the kernel's _stext (set before every fill).
        self.kernel_text = kernel_text

    def label(self, size):
        """`snapshot 100k keys` (shape a, as its rows have always read), or
        with the shape said."""
        count = f"{size // 1000}k" if size < 1_000_000 else f"{size // 1_000_000}M"
        if self.name == "a":
            return f"snapshot {count} keys"
        return f"snapshot {count} keys, {self.name}: {self.what}"


SHAPES = [
    Shape("a", 0, "keys.toml", "bench_keys_total", "{pid, syscall}, few distinct values per label", SIZES),
    Shape("b", 1, "keys_addr.toml", "bench_addr_total", "one u64 label, every key distinct", SIZES[1:]),
    Shape("c", 2, "keys_comm.toml", "bench_comm_total", "16-byte string + u32, every key distinct",
          SIZES[1:]),
    Shape("d", 3, "keys_addr_cpu.toml", "bench_addr_cpu_total", "b in a per-CPU hash", SIZES[1:]),
    Shape("e", 1, "keys_addr_hex.toml", "bench_addr_total", "b as `hex`", SIZES[1:]),
    Shape("f", 4, "keys_ksym.toml", "bench_ksym_total",
          "kernel text addresses as `ksym`, many per function", SIZES[1:], distinct=False,
          kernel_text=True),
    Shape("g", 5, "keys_inet.toml", "bench_inet_total", "`inet_ip` + `uint` port, every key distinct",
          SIZES[1:]),
    Shape("h", 6, "keys_name.toml", "bench_name_total", "one 16-byte `string`, every key distinct",
          SIZES[1:]),
    Shape("i", 7, "keys_kind.toml", "bench_kind_total", "`static_map` of 64 kinds + `uint` id",
          SIZES[1:]),
    Shape("j", 8, "keys_three.toml", "bench_three_total",
          "{pid, comm `string`, `syscall`}: three labels", SIZES[1:]),
]

# Shapes measured only when named (`--shapes k,l`): checks that a shape the
# default run does not have is within the same goals, without lengthening
# every `make bench`.
EXTRA_SHAPES = [
    Shape("k", 9, "keys_path.toml", "bench_path_total",
          "40-byte path `string` + `uint` tid (44 sort bytes), every key distinct", SIZES[1:]),
    Shape("l", 10, "keys_inet6.toml", "bench_inet6_total",
          "IPv6 `inet_ip` + u16 port and padding, every key distinct", SIZES[1:]),
    Shape("m", 11, "keys_cgroup_ksym.toml", "bench_cgroup_ksym_total",
          "`uint` cgroup of 8 + `ksym`, many keys per series", SIZES[1:], distinct=False,
          kernel_text=True),
    Shape("n", 3, "keys_addr_by_cpu.toml", "bench_addr_cpu_total",
          "d split by CPU (a `cpu` label)", SIZES[1:]),
]


def shapes_named(names):
    """The default shapes, or those of `names` (extra ones included)."""
    if not names:
        return SHAPES
    return [shape for shape in SHAPES + EXTRA_SHAPES if shape.name in names]


def kernel_text_start():
    """_stext's address from /proc/kallsyms (as root: the real one)."""
    with open("/proc/kallsyms") as symbols:
        for line in symbols:
            address, _, name = line.split()[:3]
            if name == "_stext":
                return int(address, 16)
    raise RuntimeError("no _stext in /proc/kallsyms")


def eviction_bytes():
    """Twice the largest CPU cache (at least 64 MiB): what the evictor sweeps
    before every timed read, so the floor, the library path, bpfsnap and
    bpftool all read a map as cold as one that sat idle through a sampling
    window. (A fixed 64 MiB did not: this machine's L3 is 480 MiB, and the
    floor read a warm map.)"""
    largest = 0
    for size in Path("/sys/devices/system/cpu").glob("cpu*/cache/index*/size"):
        text = size.read_text().strip()
        units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
        value = int(text.rstrip("KMG")) * units.get(text[-1:], 1)
        largest = max(largest, value)
    return max(64 << 20, 2 * largest)


class Evictor:
    """`load evictor`: one buffer for the whole bench, swept on request. A
    buffer per eviction would be freed each time, and this VM hands freed
    memory back to its host (free page reporting): the next process to
    touch fresh memory then paid for it."""

    def __init__(self):
        self.proc = subprocess.Popen([str(BUILD / "load"), "evictor", str(eviction_bytes())],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def evict(self):
        self.proc.stdin.write(b"e")
        self.proc.stdin.flush()
        if self.proc.stdout.read(1) != b"k":
            raise RuntimeError(f"the evictor failed (exit {self.proc.poll()})")

    def fds(self):
        """Its two pipe ends, for a bench program: (argument, pass_fds)."""
        fds = (self.proc.stdin.fileno(), self.proc.stdout.fileno())
        return f"{fds[0]},{fds[1]}", fds

    def stop(self):
        self.proc.stdin.close()
        self.proc.wait()


EVICTOR = None


def evict():
    """Pushes what was read last out of the CPU caches (see eviction_bytes)."""
    evictor().evict()


def evictor():
    global EVICTOR
    if EVICTOR is None:
        EVICTOR = Evictor()
    return EVICTOR


def fill(shape, size):
    """Has the running keys.bpf.c put `size` keys into its map (from _stext
    for a shape of kernel text addresses)."""
    if shape.kernel_text:
        run([BUILD / "load", "base", hex(kernel_text_start())])
    # On one CPU: a map split by CPU gets the same series every run (the
    # cron case checks that they carry on).
    run(["taskset", "-c", "0", BUILD / "load", "fill", 0, size])


def snapshot_at_scale(table, raw, configs, exes, quick, names):
    raw["snapshot"] = {}
    for shape in shapes_named(names):
        sizes = shape.sizes[:2] if quick and shape.name == "a" else shape.sizes[:1] if quick else shape.sizes
        # A snapshot of 100k keys takes ≈ 40 ms and single runs move by
        # ± 10 % on this shared machine: the median of five there, of three
        # at 1M (≈ 400 ms a run).
        results = {size: snapshot_once(shape, size, configs[shape.name, size], exes,
                                       1 if quick else 3 if size >= 1_000_000 else 5)
                   for size in sizes}
        raw["snapshot"][shape.name] = results
        for size in sizes:
            snapshot_rows(table, shape.label(size), size, results[size])
        snapshot_memory_rows(table, shape, sizes, results)


def snapshot_once(shape, size, config, exes, runs):
    """One shape and size: `bpfsnap run` (SIGINT → written and gone), the
    library path, the raw batch loop and bpftool, on the same filled map."""
    ours, carrying, snap, floor, rss, text_bytes = [], [], [], [], [], None
    bpftool = bpftool_json = library = None
    name = f"keys-{shape.name}-{size}"
    for attempt in range(runs):
        log(f"snapshot: shape {shape.name}, {size:,} keys (run {attempt + 1}/{runs})")
        output = textfile(name)
        proc = bpfsnap(name, [config, "--for", "1h"], output)
        proc.wait_for(BPFSNAP_READY)
        mid = map_id(proc.pid, size)
        fill(shape, size)
        evict_fds, pass_fds = evictor().fds()
        lines = run([exes["maploop"], mid, 3, evict_fds], stdout=subprocess.PIPE, text=True,
                    pass_fds=pass_fds).stdout.split("\n")
        pairs = [tuple(map(int, line.split())) for line in lines if line.strip()]
        if any(entries != size for entries, _ in pairs):
            raise RuntimeError(f"the map holds {pairs[0][0]} entries, not {size}: fill failed")
        floor.extend(ns / 1e9 for _, ns in pairs)
        if attempt == 0:
            library = json.loads(run([exes["snapshot"], config, mid, textfile(f"{name}-library"), runs,
                                      evict_fds], pass_fds=pass_fds,
                                     stdout=subprocess.PIPE, text=True).stdout)
            dumps = 1 if size >= 1_000_000 else 5
            times = []
            for _ in range(dumps):
                evict()
                started = time.monotonic()
                run(["bpftool", "map", "dump", "id", mid], stdout=subprocess.DEVNULL)
                times.append(time.monotonic() - started)
            bpftool = statistics.median(times)
            evict()
            started = time.monotonic()
            run(["bpftool", "-j", "map", "dump", "id", mid], stdout=subprocess.DEVNULL)
            bpftool_json = time.monotonic() - started
        evict()
        ours.append(proc.stop())
        rss.append(proc.max_rss_mib)
        proc.check_exited_ok()
        text = output.read_text()
        snap.append(metric(text, "bpfsnap_snapshot_duration_seconds"))
        series = text.count(f"\nbpfsnap_{shape.metric}{{")
        if series != size and (shape.distinct or not 0 < series < size):
            raise RuntimeError(f"bpfsnap wrote {series} series for {size} keys")
        text_bytes = len(text.encode())
        carrying.append(replacing(shape, size, config, name, output, text))
    return {
        "bpfsnap_s": statistics.median(ours), "bpfsnap_runs_s": ours,
        "carrying_on_s": statistics.median(carrying), "carrying_on_runs_s": carrying,
        "snapshot_gauge_s": statistics.median(snap), "floor_s": statistics.median(floor),
        "bpftool_s": bpftool, "bpftool_json_s": bpftool_json,
        "max_rss_mib": statistics.median(rss), "text_bytes": text_bytes, "library": library,
    }


def replacing(shape, size, config, name, output, before):
    """The cron case: the next `bpfsnap run` into the file `before` was read
    from, its counters carrying on from it (every value doubled by the same
    fill). Returns its SIGINT → written and exit, in seconds."""
    proc = bpfsnap(f"{name}-again", [config, "--for", "1h"], output, rss=False)
    proc.wait_for(BPFSNAP_READY)
    fill(shape, size)
    evict()
    seconds = proc.stop()
    proc.check_exited_ok()
    total = lambda text: sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()  # noqa: E731
                             if line.startswith(f"bpfsnap_{shape.metric}{{"))
    after = output.read_text()
    if total(after) != 2 * total(before):
        raise RuntimeError(f"carried on to {total(after)}, not twice {total(before)}")
    return seconds


def snapshot_rows(table, label, size, r):
    per = lambda key: r[key] / size * 1e9  # noqa: E731 - ns per entry
    ratio = r["bpfsnap_s"] / r["bpftool_s"]
    table.add(f"{label}: SIGINT → file written and exit, vs `bpftool map dump` (ns/entry)",
              fmt(per("bpfsnap_s")), fmt(per("bpftool_s")), fmt(ratio, "×", 3),
              "≤ 0.2× (5× faster)", verdict(ratio <= 0.2))
    ratio = r["bpfsnap_s"] / r["floor_s"]
    table.add(f"{label}: vs raw BPF_MAP_LOOKUP_BATCH loop, the floor (ns/entry)",
              fmt(per("bpfsnap_s")), fmt(per("floor_s")), fmt(ratio, "×"), "≤ 2.5×",
              verdict(ratio <= 2.5))
    ratio = r["carrying_on_s"] / r["floor_s"]
    table.add(f"{label}: replacing its previous file (counters carry on), SIGINT → written and exit "
              "vs the floor (ns/entry)",
              fmt(per("carrying_on_s")), fmt(per("floor_s")), fmt(ratio, "×"), "≤ 2.5×",
              verdict(ratio <= 2.5))
    lib = r["library"]
    ratio = lib["total"] / 1e9 / r["floor_s"]
    table.add(f"{label}: library path (read + `families` + encode + atomic write) vs the floor (ns/entry)",
              fmt(lib["total"] / size), fmt(per("floor_s")), fmt(ratio, "×"), "≤ 2.5×",
              verdict(ratio <= 2.5))
    ratio = lib["total"] / 1e9 / r["bpftool_s"]
    table.add(f"{label}: library path vs `bpftool map dump` (ns/entry)",
              fmt(lib["total"] / size), fmt(per("bpftool_s")), fmt(ratio, "×", 3),
              "≤ 0.2×", verdict(ratio <= 0.2))
    table.add(f"{label}: library path read+decode+encode (overlapped) / write+fsync (ns/entry; info)",
              " / ".join(fmt(lib[k] / size) for k in ("expose", "write")),
              fmt(per("floor_s")), "—", "—", "—")
    table.add(f"{label}: bpfsnap_snapshot_duration_seconds vs `bpftool -j map dump` (ns/entry; info)",
              fmt(per("snapshot_gauge_s")), fmt(per("bpftool_json_s")),
              fmt(r["snapshot_gauge_s"] / r["bpftool_json_s"], "×", 3), "—", "—")


def snapshot_memory_rows(table, shape, sizes, results):
    small, large = sizes[0], sizes[-1]
    which = "" if shape.name == "a" else f"shape {shape.name}: "
    if small != large:
        growth = results[large]["max_rss_mib"] - results[small]["max_rss_mib"]
        text_growth = (results[large]["text_bytes"] - results[small]["text_bytes"]) / 2**20
        table.add(f"memory: {which}max RSS growth {small // 1000}k → {large:,} keys vs the text's growth (MiB)",
                  fmt(growth), fmt(text_growth), fmt(growth / text_growth, "×"), "≤ 2×",
                  verdict(growth <= 2 * text_growth))
    lib = results[large]["library"]
    growth = lib["rss_growth_kib"] / 1024
    text_mib = lib["bytes"] / 2**20
    table.add(f"memory: {which}library path, max RSS growth over one {large:,}-key snapshot vs its text (MiB)",
              fmt(growth), fmt(text_mib), fmt(growth / text_mib, "×"), "≤ 2×", verdict(growth <= 2 * text_mib))
    if shape.name == "a" and small != large:
        per = lambda s: results[s]["bpfsnap_s"] / s * 1e9  # noqa: E731
        table.add(f"linearity: bpfsnap ns/entry at {large:,} vs {small:,} keys (info)",
                  fmt(per(large)), fmt(per(small)), fmt(per(large) / per(small), "×"), "≈ 1×", "—")


def text_encoding(table, raw, exes, quick):
    runs = 3 if quick else 5
    log("text encoding: bpfsnap")
    rust_out, py_out = OUT / "encode-bpfsnap.prom", OUT / "encode-python.prom"
    ours = json.loads(run([exes["encode"], rust_out, runs], stdout=subprocess.PIPE, text=True).stdout)
    log("text encoding: prometheus_client")
    theirs = json.loads(run([sys.executable, BENCH / "pyencode.py", py_out, 3 if quick else 5],
                            stdout=subprocess.PIPE, text=True).stdout)
    same = json.loads(run([sys.executable, BENCH / "pyencode.py", "--compare", rust_out, py_out],
                          stdout=subprocess.PIPE, text=True).stdout)
    raw["encode"] = {"bpfsnap": ours, "python": theirs, "samples_compared": same["samples"]}
    peer = theirs["write_to_textfile"]
    what = f"{ours['series']:,} series"
    ratio = ours["encode"] / peer
    table.add(f"text: encode {what} (Exposition) vs prometheus_client {theirs['version']} write_to_textfile (ms)",
              fmt(ours["encode"] / 1e6), fmt(peer / 1e6), fmt(ratio, "×", 3), "≤ 0.05× (20× faster)",
              verdict(ratio <= 0.05))
    total = ours["build"] + ours["encode"] + ours["write"]
    ratio = total / peer
    table.add("text: the same from raw series: build families + encode + atomic write with fsync (ms; info)",
              fmt(total / 1e6), fmt(peer / 1e6), fmt(ratio, "×", 3), "—", "—")
    ratio = ours["text_encoder"] / peer
    table.add("text: prometheus crate TextEncoder vs write_to_textfile (ms; info)",
              fmt(ours["text_encoder"] / 1e6), fmt(peer / 1e6), fmt(ratio, "×", 3), "—", "—")


def default_probes_bt():
    """A bpftrace script on the attach points of bpfsnap's default set."""
    return (BENCH / "default_probes.bt").read_text() + BT_READY


def startup(table, raw, probe_startup, bt_missing, quick):
    # Eleven alternating runs: a start takes tens of ms on a shared machine
    # whose neighbours move single runs by ±10 ms; the median of five still
    # moved by ±15 % from one bench to the next (BENCHMARKS.md, 2026-12-06).
    runs = 1 if quick else 11
    ours, ours_stop, theirs, theirs_stop = [], [], [], []
    for attempt in range(runs):
        log(f"start-up: default set (run {attempt + 1}/{runs})")
        proc = bpfsnap("default", ["--for", "1h"], rss=False)
        ours.append(proc.wait_for(BPFSNAP_READY))
        ours_stop.append(proc.stop())
        if not bt_missing:
            proc = Proc("bpftrace-default", ["bpftrace", "-e", default_probes_bt()], rss=False, resend=10)
            theirs.append(proc.wait_for("attached"))
            theirs_stop.append(proc.stop())
    raw["startup"] = {"bpfsnap_s": ours, "bpfsnap_stop_s": ours_stop, "bpftrace_s": theirs,
                      "bpftrace_stop_s": theirs_stop}
    med = lambda xs: statistics.median(xs) if xs else None  # noqa: E731
    for figure, a, b in (
        ("start-up to attached: default set vs bpftrace on the same attach points (ms)", med(ours), med(theirs)),
        ("start-up to attached: `syscalls` vs the bpftrace count one-liner (ms)",
         med(probe_startup.get("syscalls", [])), med(probe_startup.get("bpftrace count", []))),
    ):
        if a is None:  # --only startup: the probe runs did not measure it
            continue
        table.add(figure, fmt(a * 1e3), fmt(b * 1e3) if b else f"n/a: {bt_missing}",
                  fmt(a / b, "×", 3) if b else "—", "≤ 0.1×", verdict(a / b <= 0.1) if b else "—")
    table.add("stop: SIGINT → exit, default set (snapshot, write, detach) vs bpftrace (ms; info)",
              fmt(med(ours_stop) * 1e3), fmt(med(theirs_stop) * 1e3) if theirs_stop else "—",
              fmt(med(ours_stop) / med(theirs_stop), "×") if theirs_stop else "—", "—", "—")
    size = BPFSNAP.stat().st_size / 2**20
    table.add("binary size, stripped, static libbpf (MiB; info)", fmt(size), "—", "—", "—", "—")


def window(table, raw):
    results = {}
    for seconds in (1, 10):
        log(f"window: default set --for {seconds}s")
        output = textfile(f"window-{seconds}s")
        proc = bpfsnap(f"window-{seconds}s", ["--for", f"{seconds}s"], output)
        proc.wait(timeout=seconds + 120)
        proc.check_exited_ok()
        measured = metric(output.read_text(), "bpfsnap_window_seconds")
        results[seconds] = {"measured_s": measured, "max_rss_mib": proc.max_rss_mib}
        error = abs(measured - seconds)
        table.add(f"window --for {seconds}s: measured − requested, absolute (ms)", fmt(error * 1e3), "—", "—",
                  "≤ 1% or 10 ms", verdict(error <= max(0.01 * seconds, 0.010)))
    raw["window"] = results
    rss = results[10]["max_rss_mib"]
    table.add("peak RSS, default set, --for 10s (MiB)", fmt(rss), "—", "—", "≤ 30 MiB", verdict(rss <= 30))


def serve_latency(table, raw, quick):
    """`bpfsnap serve` and node_exporter under the same 20 scrapers over TLS
    with basic auth, one after the other: tests/serve_web.rs's benchmark
    serve_p99_beside_node_exporter, which prints one `bench-serve:` line."""
    seconds = 6 if quick else 30
    log(f"serve: 20 scrapers over TLS with basic auth, {seconds} s each for bpfsnap and node_exporter")
    env = dict(os.environ, BPFSNAP_SCRAPE_LOAD_SECONDS=str(seconds))
    result = run([CARGO, "test", "--release", "--locked", "--test", "serve_web", "--",
                  "--ignored", "--exact", "serve_p99_beside_node_exporter", "--nocapture"],
                 cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    line = re.search(r"^bench-serve: (.*)$", result.stdout, re.M)
    if not line:
        raise RuntimeError(f"serve benchmark printed no result:\n{result.stdout[-2000:]}")
    figures = {k: float(v) for k, v in (pair.split("=") for pair in line.group(1).split())}
    raw["serve"] = figures
    ours, theirs = figures["bpfsnap_p99_s"] * 1e3, figures["node_exporter_p99_s"] * 1e3
    table.add("serve p99, 20 scrapers, TLS + basic auth (ms; peer node_exporter, default collectors)",
              fmt(ours), fmt(theirs), fmt(ours / theirs, "×"), "—", "—")
    mib = 2**20
    table.add("serve peak RSS under those scrapers (MiB; info)", fmt(figures["bpfsnap_peak_rss"] / mib),
              fmt(figures["node_exporter_peak_rss"] / mib),
              fmt(figures["bpfsnap_peak_rss"] / figures["node_exporter_peak_rss"], "×"), "—", "—")


def machine():
    cpu = "?"
    try:
        cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text()).group(1)
    except (OSError, AttributeError):
        pass
    mem = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1)) // 1024
    return (f"{datetime.date.today()}, Linux {platform.release()}, {os.cpu_count()} CPUs ({cpu}), "
            f"{mem // 1024} GiB")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and sizes (a smoke test)")
    parser.add_argument("--only", default="probe,snapshot,encode,startup,window,serve")
    parser.add_argument("--shapes", default="", help="the snapshot's key shapes to measure (default: a to j; k to n only when named)")
    args = parser.parse_args()
    only = set(args.only.split(","))
    started = time.monotonic()
    ensure_tools()
    # The machine is shared: measure ahead of background jobs (inherited by
    # everything started from here).
    try:
        os.setpriority(os.PRIO_PROCESS, 0, -10)
    except OSError:
        pass
    shapes = args.shapes.split(",") if args.shapes else []
    exes, configs = build(shapes)
    builtins = run([BPFSNAP, "list"], stdout=subprocess.PIPE, text=True).stdout
    bt_missing = bpftrace_available()
    if bt_missing:
        log(f"bpftrace cannot run here: {bt_missing}")
    table, raw = Table(), {"machine": machine()}
    failure = None
    try:
        probe_startup = {}
        if "probe" in only:
            probe_startup = probe_overhead(table, raw, configs, exes, args.quick, bt_missing, builtins)
            probe_all_cpus(table, raw, configs, args.quick)
        # Before the snapshots: freeing their 1M-entry maps goes on in the
        # kernel afterwards and once slowed bpftrace's start-up sixfold.
        if "startup" in only:
            startup(table, raw, probe_startup, bt_missing, args.quick)
        if "snapshot" in only:
            snapshot_at_scale(table, raw, configs, exes, args.quick, shapes)
        if "encode" in only:
            text_encoding(table, raw, exes, args.quick)
        if "window" in only:
            window(table, raw)
        if "serve" in only:
            serve_latency(table, raw, args.quick)
    except Exception as err:  # noqa: BLE001 - the figures so far are still printed
        failure = err
        import traceback

        traceback.print_exc()
    finally:
        stop_all()
        if EVICTOR is not None:
            EVICTOR.stop()
    elapsed = time.monotonic() - started
    report = f"Measured {machine()}; `make bench` took {elapsed:.0f} s.\n\n{table.markdown()}\n"
    if failure:
        report += f"\n**Incomplete**: stopped by {type(failure).__name__}: {str(failure).splitlines()[0]}\n"
    (BUILD / "results.md").write_text(report)
    (BUILD / "results.json").write_text(json.dumps(raw, indent=1, default=str))
    print(report)
    print(f"(also in {BUILD.relative_to(ROOT)}/results.md; raw numbers in results.json)")
    if failure:
        sys.exit(1)


if __name__ == "__main__":
    main()
