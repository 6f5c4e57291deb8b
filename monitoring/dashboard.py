#!/usr/bin/env python3
"""Writes monitoring/dashboards/bpfsnap.json, bpfsnap's Grafana dashboard.

    python3 monitoring/dashboard.py            # (re)writes the JSON
    python3 monitoring/dashboard.py --check    # exit 1 if the JSON is not what it writes

A panel per built-in (bpf/*.toml): heatmaps for the latency and size
histograms, rates by label for counters with few label values, top-N tables
for those with many, and a row of bpfsnap's own health. The queries are for
counters that carry on across runs (--pin, --interval, serve, and run --for
into a file); see monitoring/README.md for --counts window. Standard library
only.
"""

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards" / "bpfsnap.json"
SEL = 'instance=~"$instance"'
RI = "$__rate_interval"


def rate(metric, by, extra=""):
    """Per-second rate of a counter, summed by the labels `by`."""
    matchers = SEL + (", " + extra if extra else "")
    return f"sum by ({by}) (rate({metric}{{{matchers}}}[{RI}]))"


class Layout:
    """Places panels on Grafana's 24-column grid, row after row."""

    def __init__(self):
        self.panels, self.x, self.y, self.height, self.next_id = [], 0, 0, 0, 1

    def row(self, title):
        self.newline()
        self.add({"type": "row", "title": title, "collapsed": False, "panels": []}, 24, 1)
        self.newline()

    def newline(self):
        self.x, self.y, self.height = 0, self.y + self.height, 0

    def add(self, panel, w, h):
        if self.x + w > 24:
            self.newline()
        panel["id"] = self.next_id
        panel["gridPos"] = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.next_id += 1
        self.x += w
        self.height = max(self.height, h)
        self.panels.append(panel)


def target(expr, legend="", fmt="time_series", instant=False, ref="A"):
    return {
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "expr": expr,
        "legendFormat": legend or "__auto",
        "format": fmt,
        "instant": instant,
        "range": not instant,
        "refId": ref,
    }


def panel(kind, title, description, targets, **extra):
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "targets": [dict(t, refId=chr(ord("A") + i)) for i, t in enumerate(targets)],
        **extra,
    }


def timeseries(title, description, targets, unit="short"):
    return panel(
        "timeseries",
        title,
        description,
        targets,
        fieldConfig={"defaults": {"unit": unit}, "overrides": []},
        options={"legend": {"displayMode": "table", "placement": "right", "calcs": ["mean", "max"]}},
    )


def heatmap(title, description, metric, unit):
    expr = f"sum by (le) (rate({metric}_bucket{{{SEL}}}[{RI}]))"
    return panel(
        "heatmap",
        title,
        description,
        [target(expr, "{{le}}", fmt="heatmap")],
        options={
            "calculate": False,
            "yAxis": {"unit": unit},
            "cellGap": 1,
            "color": {"mode": "scheme", "scheme": "Oranges", "exponent": 0.5},
            "tooltip": {"show": True, "yHistogram": True},
        },
        fieldConfig={"defaults": {}, "overrides": []},
    )


def quantiles(title, description, metric, by, unit="s"):
    legend = " ".join("{{%s}}" % label for label in by.split(", "))
    expr = f"histogram_quantile(0.99, sum by ({by}, le) (rate({metric}_bucket{{{SEL}}}[{RI}])))"
    return timeseries(title, description, [target(expr, "p99 " + legend)], unit)


def topk(title, description, metric, by, n=15, scale=""):
    expr = f"topk({n}, {rate(metric, by)}{scale})"
    return panel(
        "table",
        title,
        description,
        [target(expr, fmt="table", instant=True)],
        transformations=[
            {"id": "organize", "options": {"excludeByName": {"Time": True}, "renameByName": {"Value": "per second"}}},
            {"id": "sortBy", "options": {"sort": [{"field": "per second", "desc": True}]}},
        ],
        fieldConfig={"defaults": {"unit": "short", "decimals": 2}, "overrides": []},
    )


def stat(title, description, expr, unit="short", thresholds=None):
    steps = thresholds or [{"color": "green", "value": None}]
    return panel(
        "stat",
        title,
        description,
        [target(expr, "{{instance}} {{output}}")],
        fieldConfig={"defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}}, "overrides": []},
        options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}, "colorMode": "background"},
    )


def or_zero(expr):
    """`expr`, or 0 for every instance when it has no series (bpfsnap writes
    a drop or error counter only once something was dropped)."""
    return f"{expr} or on (instance) sum by (instance) (0 * bpfsnap_up{{{SEL}}})"


def health(layout):
    layout.row("bpfsnap")
    red_below_1 = [{"color": "red", "value": None}, {"color": "green", "value": 1}]
    layout.add(stat("Up", "bpfsnap_up: 1 if every selected config ran, 0 if some failed.",
                    f"min by (instance, output) (bpfsnap_up{{{SEL}}})", thresholds=red_below_1), 6, 5)
    stale = [{"color": "green", "value": None}, {"color": "orange", "value": 300}, {"color": "red", "value": 900}]
    layout.add(stat("Since the last success",
                    "time() - bpfsnap_last_success_timestamp_seconds: how old the textfile's last fully "
                    "successful run is (textfile outputs; serve is scraped live and has no such timestamp).",
                    f"time() - max by (instance, output) (bpfsnap_last_success_timestamp_seconds{{{SEL}}})",
                    "s", stale), 6, 5)
    layout.add(timeseries("Configs up", "bpfsnap_config_up: 0 for a config whose programs failed to load or attach.",
                          [target(f"min by (instance, config) (bpfsnap_config_up{{{SEL}}})", "{{instance}} {{config}}")]),
               12, 5)
    layout.add(timeseries("Snapshot duration", "Time taken to read the BPF maps and encode their metrics.",
                          [target(f"max by (instance, output) (bpfsnap_snapshot_duration_seconds{{{SEL}}})",
                                  "{{instance}} {{output}}")], "s"), 8, 7)
    dropped = [
        ("series over max_series", "bpfsnap_series_dropped_total", "config, metric"),
        ("events dropped (new label sets over max_series)", "bpfsnap_events_dropped_total", "config, map"),
        ("events lost (buffer full)", "bpfsnap_events_lost_total", "config, map"),
        ("keys a decoder rejected", "bpfsnap_decoder_errors_total", "config, decoder"),
    ]
    layout.add(timeseries(
        "Dropped and limited",
        "What bpfsnap left out, per second: series over a metric's max_series, events of new label sets "
        "over max_series, events lost before they were counted, keys a decoder rejected (0: nothing).",
        [target(or_zero(rate(metric, "instance, " + by)), what + " {{instance}}") for what, metric, by in dropped]),
        8, 7)
    layout.add(timeseries(
        "Missed events (recursion)",
        "Events each BPF program missed because it was already running on that CPU: its counts fall short by this much.",
        [target(rate("bpfsnap_program_recursion_misses_total", "instance, config"), "{{instance}} {{config}}")]),
        8, 7)
    layout.add(timeseries(
        "Failed scrapes and writes",
        "serve: scrapes that failed or were refused, by cause; run --interval: outputs it failed to write (0: none).",
        [target(or_zero(rate("bpfsnap_scrape_errors_total", "instance, cause")), "scrape {{cause}} {{instance}}"),
         target(or_zero(rate("bpfsnap_write_failures_total", "instance")), "write {{instance}}")]),
        24, 6)


# Per built-in: (config, row title or None to go on in the row above,
# panels as (function, args, width)); tests/monitoring.rs checks that every
# metric of bpf/*.toml has a panel.
def builtins():
    return storage_and_scheduler() + system_calls_and_processes() + network() + containers()


def storage_and_scheduler():
    bio = "bpfsnap_block_io_latency_seconds"
    return [
        ("biolatency", "Block I/O latency (biolatency)", [
            (heatmap, ("Block I/O latency", "Issue to completion, all disks and operations.", bio, "s"), 12),
            (quantiles, ("Block I/O latency p99", "99th percentile by disk and operation.", bio, "device, operation"), 12),
        ]),
        ("biosize", "Block I/O sizes (biosize)", [
            (heatmap, ("Block I/O request sizes", "Sizes of requests issued to devices.", "bpfsnap_block_io_size_bytes", "bytes"), 12),
            (timeseries, ("Block I/O requests", "Requests issued per second, by disk and operation.",
                          [target(rate("bpfsnap_block_io_size_bytes_count", "device, operation"), "{{device}} {{operation}}")],
                          "reqps"), 12),
        ]),
        ("runqlat", "Scheduler (runqlat, softirqs, hrtimers)", [
            (heatmap, ("Run-queue latency", "Time runnable tasks waited for a CPU.", "bpfsnap_runqueue_latency_seconds", "s"), 8),
            (quantiles, ("Run-queue latency p99", "99th percentile of the wait for a CPU.",
                         "bpfsnap_runqueue_latency_seconds", "instance"), 8),
        ]),
        ("softirqs", None, [
            (heatmap, ("Softirq run time", "Durations of softirq handler runs, all vectors.", "bpfsnap_softirq_duration_seconds", "s"), 8),
            (timeseries, ("Softirq time by vector", "Seconds per second spent in softirq handlers, by vector.",
                          [target(rate("bpfsnap_softirq_duration_seconds_sum", "vector"), "{{vector}}")], "percentunit"), 12),
        ]),
        ("hrtimers", None, [
            (topk, ("Timer expirations (top 15)", "High-resolution timers fired per second, by callback.",
                    "bpfsnap_hrtimer_expirations_total", "function"), 12),
        ]),
    ]


def system_calls_and_processes():
    return [
        ("syscalls", "System calls (syscalls, syscall_latency, syscall_errors)", [
            (topk, ("System calls (top 15)", "Calls per second, by system call.", "bpfsnap_syscalls_total", "syscall"), 8),
        ]),
        ("syscall_errors", None, [
            (topk, ("Failed system calls (top 15)", "Calls per second that returned an error, by call and errno.",
                    "bpfsnap_syscall_errors_total", "syscall, errno"), 8),
        ]),
        ("syscall_latency", None, [
            (heatmap, ("System call latency", "Entry to exit, all system calls.", "bpfsnap_syscall_latency_seconds", "s"), 8),
            (topk_quantile, ("Slowest system calls, p99 (top 15)", "99th percentile of each call's latency.",
                             "bpfsnap_syscall_latency_seconds", "syscall"), 12),
        ]),
        ("execs", "Processes (execs, exits, signals, profile, oomkill, pagefaults)", [
            (topk, ("Execs (top 15)", "Programs started per second, by command name.", "bpfsnap_execs_total", "comm"), 8),
        ]),
        ("exits", None, [
            (topk, ("Exits (top 15)", "Processes ending per second, by command, how and code.",
                    "bpfsnap_process_exits_total", "comm, how, code"), 8),
        ]),
        ("signals", None, [
            (timeseries, ("Signals", "Signals generated per second, by signal and result.",
                          [target(rate("bpfsnap_signals_total", "signal, result"), "{{signal}} {{result}}")]), 8),
        ]),
        ("profile", None, [
            (topk, ("On-CPU (top 15, CPUs)", "CPUs used, by thread name: 99 Hz samples per second / 99.",
                    "bpfsnap_cpu_samples_total", "comm", 15, " / 99"), 8),
        ]),
        ("oomkill", None, [
            (timeseries, ("OOM kills", "Tasks the OOM killer chose, by command name, per 5 minutes.",
                          [target(f"sum by (comm) (increase(bpfsnap_oom_kills_total{{{SEL}}}[5m]))", "{{comm}}")]), 8),
        ]),
        ("pagefaults", None, [
            (timeseries, ("User page faults", "Page faults per second in user mode, by access and cause.",
                          [target(rate("bpfsnap_user_page_faults_total", "access, cause"), "{{access}} {{cause}}")]), 8),
        ]),
    ]


def network():
    return [
        ("tcp_retransmits", "Network (tcp_retransmits, tcp_states, skb_drops)", [
            (timeseries, ("TCP retransmits", "Retransmitted packets per second, by socket state and family.",
                          [target(rate("bpfsnap_tcp_retransmits_total", "state, family"), "{{state}} {{family}}")], "pps"), 8),
        ]),
        ("tcp_states", None, [
            (timeseries, ("TCP state transitions", "Sockets changing state per second, old → new.",
                          [target(rate("bpfsnap_tcp_state_transitions_total", "old_state, new_state"),
                                  "{{old_state}} → {{new_state}}")]), 8),
        ]),
        ("skb_drops", None, [
            (timeseries, ("Packet drops by reason", "Packets the kernel dropped per second, by reason and protocol.",
                          [target(rate("bpfsnap_skb_drops_total", "reason, protocol"), "{{reason}} {{protocol}}")], "pps"), 8),
        ]),
    ]


def containers():
    who = "namespace, pod, container"
    legend = "{{namespace}} {{pod}} {{container}}"
    return [
        ("exits_by_container", "Containers (the _by_container built-ins, --by container)", [
            (topk, ("Exits by container (top 15)", "Processes ending per second, by container, how and code.",
                    "bpfsnap_container_process_exits_total", who + ", how, code"), 8),
        ]),
        ("syscall_errors_by_container", None, [
            (topk, ("Failed system calls by container (top 15)", "Failed calls per second, by container, call and errno.",
                    "bpfsnap_container_syscall_errors_total", who + ", syscall, errno"), 8),
        ]),
        ("oomkill_by_container", None, [
            (timeseries, ("OOM kills by container", "Tasks the OOM killer chose, by the victim's container, per 5 minutes.",
                          [target(f"sum by ({who}) (increase(bpfsnap_container_oom_kills_total{{{SEL}}}[5m]))",
                                  legend)]), 8),
        ]),
        ("tcp_retransmits_by_container", None, [
            (timeseries, ("TCP retransmits by container", "Retransmitted packets per second, by the socket's container.",
                          [target(rate("bpfsnap_container_tcp_retransmits_total", who), legend)], "pps"), 12),
        ]),
        ("runqlat_by_container", None, [
            (heatmap, ("Run-queue latency, containers", "Time runnable tasks waited for a CPU, every cgroup.",
                       "bpfsnap_container_runqueue_latency_seconds", "s"), 12),
            (topk_quantile, ("Longest run-queue waits by container, p99 (top 15)",
                             "99th percentile of the wait for a CPU, by container.",
                             "bpfsnap_container_runqueue_latency_seconds", who), 12),
        ]),
    ]


def topk_quantile(title, description, metric, by, n=15):
    expr = f"topk({n}, histogram_quantile(0.99, sum by ({by}, le) (rate({metric}_bucket{{{SEL}}}[{RI}]))))"
    table = topk(title, description, metric, by, n)
    table["targets"] = [target(expr, fmt="table", instant=True)]
    table["fieldConfig"]["defaults"]["unit"] = "s"
    table["transformations"][0]["options"]["renameByName"] = {"Value": "p99"}
    table["transformations"][1]["options"]["sort"][0]["field"] = "p99"
    return table


def variables():
    datasource = {"type": "datasource", "name": "datasource", "label": "Data source", "query": "prometheus",
                  "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": []}
    instance = {
        "type": "query",
        "name": "instance",
        "label": "Instance",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": "label_values(bpfsnap_up, instance)", "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "definition": "label_values(bpfsnap_up, instance)",
        "refresh": 2,
        "includeAll": True,
        "allValue": ".+",
        "multi": True,
        "current": {},
        "options": [],
        "sort": 1,
        "hide": 0,
    }
    return {"list": [datasource, instance]}


def dashboard():
    layout = Layout()
    health(layout)
    for _config, row, panels in builtins():
        if row:
            layout.row(row)
        for function, args, width in panels:
            layout.add(function(*args), width, 8)
    return {
        "title": "bpfsnap",
        "uid": "bpfsnap",
        "description": "eBPF measurements from bpfsnap's built-ins (textfile collector or bpfsnap serve), "
                       "and bpfsnap's own health. Generated by monitoring/dashboard.py.",
        "tags": ["bpfsnap", "ebpf"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "time": {"from": "now-3h", "to": "now"},
        "refresh": "1m",
        "timezone": "",
        "templating": variables(),
        "annotations": {"list": []},
        "links": [],
        "panels": layout.panels,
    }


def main():
    text = json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"
    if sys.argv[1:] == ["--check"]:
        if not OUT.exists() or OUT.read_text() != text:
            sys.exit(f"{OUT} is not what {__file__} writes: run it")
        return
    OUT.write_text(text)


if __name__ == "__main__":
    main()
