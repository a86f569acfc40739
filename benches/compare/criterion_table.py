#!/usr/bin/env python3
"""Prints the last `cargo bench -p replicore` run as markdown tables (for docs/benchmarks.md):
the median of each criterion case from target/criterion/*/*/new/estimates.json, and the
throughput where the bench declares one.

    python3 benches/compare/criterion_table.py [TARGET_DIR]
"""

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def fmt_time(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def fmt_rate(per_sec, unit):
    if unit == "B":
        return f"{per_sec / 2**20:.0f} MiB/s"
    for suffix, scale in (("M", 1e6), ("k", 1e3)):
        if per_sec >= scale:
            return f"{per_sec / scale:.3g} {suffix}/s"
    return f"{per_sec:.3g}/s"


def natural(s):
    """Sorts "x/10" before "x/100000" and "16B" before "1KiB" before "64KiB"."""
    sizes = {"16B": 16, "100B": 100, "1KiB": 1024, "4KiB": 4096, "64KiB": 65536}
    key = []
    for part in s.replace("=", "/").split("/"):
        key.append((0, sizes[part], "") if part in sizes else (0, int(part), "") if part.isdigit() else (1, 0, part))
    return key


def main():
    target = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    base = os.path.join(target, "criterion")
    if not os.path.isdir(base):
        raise SystemExit(f"criterion_table: no {base}; run `cargo bench -p replicore` first")
    rows = {}
    for dirpath, _, files in os.walk(base):
        if not dirpath.endswith(os.path.join("new")) or "estimates.json" not in files:
            continue
        with open(os.path.join(dirpath, "benchmark.json")) as f:
            meta = json.load(f)
        with open(os.path.join(dirpath, "estimates.json")) as f:
            median = json.load(f)["median"]["point_estimate"]
        rate = ""
        tp = meta.get("throughput") or {}
        if "Bytes" in tp:
            rate = fmt_rate(tp["Bytes"] / (median / 1e9), "B")
        elif "Elements" in tp:
            rate = fmt_rate(tp["Elements"] / (median / 1e9), "elements")
        rows.setdefault(meta["group_id"], []).append((meta["full_id"], fmt_time(median), rate))
    for group in sorted(rows):
        print(f"\n{group}\n\n| case | median time | throughput |\n|---|---:|---:|")
        for full_id, t, rate in sorted(rows[group], key=lambda r: natural(r[0])):
            print(f"| `{full_id.removeprefix(group + '/')}` | {t} | {rate} |")


if __name__ == "__main__":
    main()
