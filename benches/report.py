#!/usr/bin/env python3
"""Medians of benches/compare.sh results and their ratios to Distribution, as a Markdown table.

Usage: python3 benches/report.py results.jsonl [more.jsonl ...]   (medians over all the files' runs)
       python3 benches/report.py --line '<one wharf bench --json report>'
"""
import json
import statistics
import sys
from collections import defaultdict

# (case, figure, label, target ratio for serve, target ratio for the cluster, higher is better)
ROWS = [
    ("push-big-monolithic", "mb_per_second", "push one big blob, monolithic (MB/s)", 1.3, 1.0, True),
    ("push-big-chunked", "mb_per_second", "push one big blob, 16 MiB chunks (MB/s)", 1.3, 1.0, True),
    ("pull-big", "mb_per_second", "pull one big blob (MB/s)", 1.0, 1.2, True),
    ("pull-200x1MiB", "ops_per_second", "pull 200 x 1 MiB, concurrency 16 (blobs/s)", 1.5, 1.2, True),
    ("push-2000x4KiB", "ops_per_second", "push 2000 x 4 KiB, concurrency 16 (blobs/s)", 3.0, 2.0, True),
    ("manifest-get-tag", "ops_per_second", "manifest GET by tag, 64 connections (req/s)", 2.0, 1.5, True),
    ("manifest-put", "ops_per_second", "manifest PUT, concurrency 16 (req/s)", 1.5, 1.0, True),
    ("manifest-get-tag", "rss_peak_mib", "peak RSS under the manifest GET load (MiB)", 1.0, None, False),
    ("pull-200x1MiB", "rss_peak_mib", "peak RSS under the blob GET load (MiB)", 1.0, None, False),
    ("memory", "rss_peak_mib", "peak RSS over all the runs, VmHWM (MiB)", 1.0, None, False),
    ("memory", "rss_idle_mib", "RSS idle after the runs (MiB)", 1.5, None, False),
]


def main(paths):
    values = defaultdict(list)
    errors = defaultdict(int)
    lines = [line for path in paths for line in open(path)]
    for line in lines:
        record = json.loads(line)
        key = (record["target"], record["case"])
        errors[key] += record["errors"]
        for field in ("mb_per_second", "ops_per_second", "rss_peak_mib", "rss_idle_mib"):
            if record.get(field) is not None:
                values[key + (field,)].append(record[field])
    runs = max((len(v) for v in values.values()), default=0)

    def median(target, case, field):
        found = values.get((target, case, field))
        return statistics.median(found) if found else None

    print(f"| workload (median of {runs}) | Distribution | serve | ratio | target | cluster | ratio | target |")
    print("|---|---|---|---|---|---|---|---|")
    for case, field, label, serve_goal, cluster_goal, higher in ROWS:
        base = median("distribution", case, field)
        cells = [label, fmt(base)]
        for target, goal in (("serve", serve_goal), ("cluster", cluster_goal)):
            value = median(target, case, field)
            ratio = value / base if value is not None and base else None
            cells += [fmt(value), f"{ratio:.2f}x" if ratio is not None else "-", verdict(ratio, goal, higher)]
        print("| " + " | ".join(cells) + " |")
    print()
    print("spread (min - max over the runs):")
    for case, field, label, _, _, _ in ROWS:
        cells = []
        for target in ("distribution", "serve", "cluster"):
            found = values.get((target, case, field))
            if found:
                cells.append(f"{target} {min(found):,.1f} - {max(found):,.1f}")
        print(f"- {label}: " + "; ".join(cells))
    if any(target.endswith("_s3") for target, _, _ in values):
        s3_table(median, runs)
    failed = {key: count for key, count in errors.items() if count}
    if failed:
        print()
        for (target, case), count in sorted(failed.items()):
            print(f"errors: {target} {case}: {count}")


# Rows of the object-storage table (issue 14): (case, figure, label).
S3_ROWS = [
    ("push-big-monolithic", "mb_per_second", "push one big blob, monolithic (MB/s)"),
    ("pull-big", "mb_per_second", "pull one big blob (MB/s)"),
    ("push-200x1MiB", "ops_per_second", "push 200 x 1 MiB, concurrency 16 (blobs/s)"),
    ("pull-200x1MiB", "ops_per_second", "pull 200 x 1 MiB, concurrency 16 (blobs/s)"),
    ("memory", "rss_peak_mib", "peak RSS over all the runs, VmHWM (MiB)"),
]


def s3_table(median, runs):
    """Registries on a bucket of the same S3 server, beside their own local-disk figures."""
    print()
    print(f"on S3 (median of {runs}):")
    print()
    print("| workload | Distribution, disk | serve, disk | Distribution, S3 | serve, S3 | serve/Distribution on S3 | serve S3/disk |")
    print("|---|---|---|---|---|---|---|")
    for case, field, label in S3_ROWS:
        disk_d, disk_s = median("distribution", case, field), median("serve", case, field)
        s3_d, s3_s = median("distribution_s3", case, field), median("serve_s3", case, field)
        ratio = f"{s3_s / s3_d:.2f}x" if s3_s is not None and s3_d else "-"
        cost = f"{s3_s / disk_s:.2f}x" if s3_s is not None and disk_s else "-"
        print(f"| {label} | {fmt(disk_d)} | {fmt(disk_s)} | {fmt(s3_d)} | {fmt(s3_s)} | {ratio} | {cost} |")


def fmt(value):
    return "-" if value is None else f"{value:,.1f}"


def verdict(ratio, goal, higher):
    if goal is None:
        return "-"
    if ratio is None:
        return f"{'>=' if higher else '<='} {goal}x ?"
    met = ratio >= goal if higher else ratio <= goal
    return f"{'>=' if higher else '<='} {goal}x {'met' if met else 'NOT met'}"


def line(text):
    r = json.loads(text)
    summary = (
        f"{r['mb_per_second']:.1f} MB/s, {r['ops_per_second']:.1f} ops/s, "
        f"p99 {r['latency_ms']['p99']:.2f} ms, errors {r['errors']}"
    )
    if r.get("rss_peak_mib"):
        summary += f", RSS {r['rss_peak_mib']:.1f} MiB"
    print(summary)


if __name__ == "__main__":
    if sys.argv[1] == "--line":
        line(sys.argv[2])
    else:
        main(sys.argv[1:])
