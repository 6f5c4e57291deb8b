#!/usr/bin/env python3
"""The Python peer of benches/encode.rs: prometheus_client's write_to_textfile
on the same data set (100k counter series with 2 labels, 1k histograms of 30
buckets, built from the same formulas).

    pyencode.py OUTPUT RUNS        prints JSON medians in ns: write_to_textfile
                                   (collect from raw data + encode + write) and
                                   generate_latest (the same without the file)
    pyencode.py --compare A B      checks that two text files hold the same
                                   samples (values and `le` compared as floats)
"""
import json
import statistics
import sys
import time

COUNTERS, HISTOGRAMS, BUCKETS = 100_000, 1_000, 30


def data():
    counters = [
        ((str(1000 + i // 64), "sc%02d" % (i % 64)), float(i % 1000 + 1))
        for i in range(COUNTERS)
    ]
    bounds = [2.0 ** (k + 7) * 1e-9 for k in range(BUCKETS)]
    histograms = []
    for j in range(HISTOGRAMS):
        total, cumulative = 0, []
        for k in range(BUCKETS):
            total += (j + k) % 7
            cumulative.append(total)
        histograms.append(("op%04d" % j, cumulative, j * 0.5))
    return counters, bounds, histograms


def measure(output, runs):
    from prometheus_client import CollectorRegistry, generate_latest, write_to_textfile
    from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

    counters, bounds, histograms = data()

    class Collector:
        """Builds the families from the raw data on every collect, as an
        exporter does."""

        def collect(self):
            counter = CounterMetricFamily(
                "bench_series", "Benchmark counter series.", labels=["pid", "syscall"]
            )
            for labels, value in counters:
                counter.add_metric(labels, value)
            yield counter
            histogram = HistogramMetricFamily(
                "bench_latency_seconds", "Benchmark histograms.", labels=["op"]
            )
            les = [repr(b) for b in bounds]
            for op, cumulative, total in histograms:
                buckets = list(zip(les, cumulative))
                buckets.append(("+Inf", cumulative[-1]))
                histogram.add_metric([op], buckets, total)
            yield histogram

    registry = CollectorRegistry()
    registry.register(Collector())
    textfile, latest = [], []
    for _ in range(runs):
        started = time.perf_counter_ns()
        write_to_textfile(output, registry)
        textfile.append(time.perf_counter_ns() - started)
        started = time.perf_counter_ns()
        text = generate_latest(registry)
        latest.append(time.perf_counter_ns() - started)
    import prometheus_client

    version = getattr(prometheus_client, "__version__", None)
    if version is None:
        try:
            from importlib.metadata import version as dist_version

            version = dist_version("prometheus_client")
        except Exception:  # noqa: BLE001 - only informative
            version = "?"
    print(
        json.dumps(
            {
                "write_to_textfile": statistics.median(textfile),
                "generate_latest": statistics.median(latest),
                "bytes": len(text),
                "version": version,
            }
        )
    )


def samples(path):
    from prometheus_client.parser import text_string_to_metric_families

    with open(path) as f:
        text = f.read()
    found = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = dict(sample.labels)
            if "le" in labels:
                labels["le"] = float(labels["le"])
            found.add((sample.name, tuple(sorted(labels.items())), float(sample.value)))
    return found


def compare(a, b):
    ours, theirs = samples(a), samples(b)
    if ours != theirs:
        only = sorted(ours ^ theirs)[:5]
        sys.exit(f"pyencode: {a} and {b} differ ({len(ours)} vs {len(theirs)} samples), e.g. {only}")
    print(json.dumps({"samples": len(ours)}))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--compare":
        compare(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3:
        measure(sys.argv[1], int(sys.argv[2]))
    else:
        sys.exit(__doc__)
