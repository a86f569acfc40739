#!/usr/bin/env python3
"""Prints the last `cargo bench -p replicore` run as markdown tables (for docs/benchmarks.md):
the median of each criterion case from target/criterion/*/*/new/estimates.json, and the
throughput where the bench declares one.

    python3 benches/compare/criterion_table.py [TARGET_DIR]
    python3 benches/compare/criterion_table.py --doc [E2E_LOG]

`--doc` prints the pivoted tables docs/benchmarks.md shows (codec, actor_step, commit_cost,
model_check, end_to_end); E2E_LOG is the output of `cargo bench -p replicore --bench
end_to_end`, whose latency quantiles criterion does not store.
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


def load(target):
    """{group: {case: (median ns, throughput dict)}} of the last run."""
    base = os.path.join(target, "criterion")
    if not os.path.isdir(base):
        raise SystemExit(f"criterion_table: no {base}; run `cargo bench -p replicore` first")
    out = {}
    for dirpath, _, files in os.walk(base):
        if os.path.basename(dirpath) != "new" or "estimates.json" not in files:
            continue
        with open(os.path.join(dirpath, "benchmark.json")) as f:
            meta = json.load(f)
        with open(os.path.join(dirpath, "estimates.json")) as f:
            median = json.load(f)["median"]["point_estimate"]
        case = meta["full_id"].removeprefix(meta["group_id"] + "/")
        out.setdefault(meta["group_id"], {})[case] = (median, meta.get("throughput") or {})
    return out


def doc(e2e_log):
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    r = load(target)
    sizes = ["16B", "1KiB", "64KiB"]
    enc, dec = r.get("codec_encode", {}), r.get("codec_decode", {})

    def mib(entry):
        return fmt_rate(entry[1]["Bytes"] / (entry[0] / 1e9), "B")

    print("| message | value | encode | decode | encode rate | decode rate |\n|---|---:|---:|---:|---:|---:|")
    for kind in ("announce", "prepare", "delta", "snapshot", "update"):
        for size in sizes:
            k = f"{kind}/{size}"
            if k in enc and k in dec:
                print(f"| `{kind}` | {size.replace('KiB', ' KiB').replace('B', ' B') if 'KiB' not in size else size.replace('KiB', ' KiB')} "
                      f"| {fmt_time(enc[k][0])} | {fmt_time(dec[k][0])} | {mib(enc[k])} | {mib(dec[k])} |")
    fixed = [k for k in enc if "/" not in k and k in dec]
    for k in sorted(fixed):
        print(f"| `{k}` | — | {fmt_time(enc[k][0])} | {fmt_time(dec[k][0])} | | |")
    print("\nACTOR\n\n| step | 10 keys | 100 000 keys | ratio |\n|---|---:|---:|---:|")
    a = r.get("actor_step", {})
    for step in ("master/announce", "master/prepare", "master/vote", "master/commit", "master/delta_request",
                 "slave/announce", "slave/prepare_vote", "slave/commit", "slave/delta_request", "slave/delta"):
        small, large = a.get(f"{step}/10"), a.get(f"{step}/100000")
        if small and large:
            print(f"| `{step}` | {fmt_time(small[0])} | {fmt_time(large[0])} | {large[0] / small[0]:.1f}× |")
    print("\nCOMMIT\n\n| one-key update | 1 000 keys | 100 000 keys |\n|---|---:|---:|")
    c = r.get("commit_cost", {})
    for case in ("diff_one_key", "durable_save_one_key"):
        if f"{case}/1000" in c and f"{case}/100000" in c:
            print(f"| `{case}` | {fmt_time(c[f'{case}/1000'][0])} | {fmt_time(c[f'{case}/100000'][0])} |")
    print("\nMODEL\n\n| config | states visited | time per check | states/s |\n|---|---:|---:|---:|")
    m = r.get("model_check", {})
    for name, desc in (("small", "2 slaves, `2p`"), ("larger", "2 slaves, `1p,1p`")):
        e = m.get(f"dfs_states/{name}")
        if e:
            n = e[1]["Elements"]
            print(f"| {name}: {desc} | {n:,} | {fmt_time(e[0])} | {fmt_rate(n / (e[0] / 1e9), 'elements')} |")
    lat = {}
    if e2e_log:
        with open(e2e_log) as f:
            for line in f:
                if line.startswith("e2e_two_phase/") and "p50" in line:
                    case = line.split(":")[0].removeprefix("e2e_two_phase/")
                    nums = [w for w in line.replace(";", " ").split() if w.replace(".", "").isdigit()]
                    # updates, client p50, client p99, all p50, all p99
                    lat[case] = nums
    print("\nE2E\n\n| slaves | clients | value | one-phase updates/s to all | two-phase updates/s "
          "| two-phase p50 / p99 to the client | two-phase p50 / p99 to commit on all |\n"
          "|---:|---:|---:|---:|---:|---:|---:|")
    one, two = r.get("e2e_one_phase", {}), r.get("e2e_two_phase", {})
    for slaves in (1, 2, 4):
        for clients in (1, 16):
            for size in ("100B", "4KiB"):
                case = f"slaves={slaves}/clients={clients}/{size}"
                o, t = one.get(case), two.get(case)
                rate = lambda e: fmt_rate(1e9 / e[0], "elements") if e else "—"  # noqa: E731
                l = lat.get(case)
                cl = f"{l[1]} / {l[2]} ms" if l else "—"
                al = f"{l[3]} / {l[4]} ms" if l else "—"
                print(f"| {slaves} | {clients} | {size.replace('B', ' B').replace('Ki ', ' Ki')} | {rate(o)} | {rate(t)} | {cl} | {al} |")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--doc":
        doc(sys.argv[2] if len(sys.argv) > 2 else None)
        return
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
