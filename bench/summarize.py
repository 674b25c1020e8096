#!/usr/bin/env python3
"""summarize.py — medians and ratios from the shared bench's RESULTS_TSV.

Usage: bench/summarize.py RESULTS_TSV [BASE_LABEL CMP_LABEL]...   (default pairs: btrfs ubtrfs,
       btrfs-zstd ubtrfs-zstd)

RESULTS_TSV rows (written by fsbench.sh): run_id label workload value unit p99 extra.
For every pair it prints a Markdown table: per workload the median value of each label over its
rounds, the ratio CMP/BASE of the medians, the median p99 (fsbench's p99 column: write/read
completion latency, fsync latency for fsync4k, per-op latency for meta_*), the median of the
per-round ratios (rounds rN of both labels, run back to back), the median daemon CPU seconds of CMP, the number of rounds, and FAILED rounds.  Higher is better for every fsbench
value (MiB/s, IOPS, ops/s).
"""
import re
import statistics
import sys
from collections import defaultdict

ORDER = ["seqwrite", "seqread", "randwrite4k", "fsync4k", "meta_create", "meta_stat",
         "meta_statcold", "meta_delete", "compwrite"]


def to_us(s):
    m = re.fullmatch(r"([0-9.]+)(us|ms)", s or "")
    if not m:
        return None
    return float(m.group(1)) * (1000.0 if m.group(2) == "ms" else 1.0)


def fmt_us(v):
    if v is None:
        return "-"
    return f"{v / 1000:.2f} ms" if v >= 1000 else f"{v:.0f} us"


def fmt(v):
    if v is None:
        return "-"
    return f"{v:.0f}" if v >= 1000 else f"{v:.1f}"


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    pairs = sys.argv[2:]
    if len(pairs) % 2:
        sys.exit("labels come in pairs")
    pairs = list(zip(pairs[::2], pairs[1::2])) or [("btrfs", "ubtrfs"), ("btrfs-zstd", "ubtrfs-zstd")]
    rows = defaultdict(list)       # (label, workload) -> [(value, p99_us, daemon_cpu)]
    byrun = defaultdict(dict)      # (label, workload) -> {round number: value}
    failed = defaultdict(list)     # (label, workload) -> [run_id]
    units = {}
    with open(sys.argv[1]) as f:
        for line in f:
            p = line.rstrip("\n").split("\t")
            if len(p) < 6:
                continue
            run, label, wl, val, unit, p99 = p[:6]
            extra = p[6] if len(p) > 6 else ""
            if val == "FAILED":
                failed[(label, wl)].append(run)
                continue
            m = re.search(r"daemon_cpu_s=([0-9.]+)", extra)
            rows[(label, wl)].append((float(val), to_us(p99), float(m.group(1)) if m else None))
            byrun[(label, wl)][run] = float(val)
            units[wl] = unit
    for base, cmp_ in pairs:
        wls = [w for w in ORDER if (base, w) in rows or (cmp_, w) in rows
               or (cmp_, w) in failed or (cmp_, "metadata") in failed]
        if not wls:
            continue
        print(f"\n### {cmp_} / {base}\n")
        print(f"| workload | unit | {base} | {cmp_} | ratio | p99 {base} | p99 {cmp_} | per-round ratio (median) | {cmp_} daemon CPU s | rounds | failed rounds ({cmp_}) |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|")
        for w in wls:
            def med(label, i):
                xs = [r[i] for r in rows.get((label, w), []) if r[i] is not None]
                return statistics.median(xs) if xs else None
            b, c = med(base, 0), med(cmp_, 0)
            ratio = f"{c / b:.2f}" if b and c is not None else "-"
            fails = failed.get((cmp_, w), []) + (failed.get((cmp_, "metadata"), []) if w.startswith("meta_") else [])
            n = f"{len(rows.get((base, w), []))}/{len(rows.get((cmp_, w), []))}"
            dcpu = med(cmp_, 2)
            # rounds of both targets with the same round number (rN), run back to back
            rb, rc = byrun.get((base, w), {}), byrun.get((cmp_, w), {})
            num = lambda r: re.sub(r"\D", "", r)
            rbn = {num(r): v for r, v in rb.items()}
            pr = [v / rbn[num(r)] for r, v in rc.items() if rbn.get(num(r))]
            prs = f"{statistics.median(pr):.2f}" if pr else "-"
            print(f"| {w} | {units.get(w, '')} | {fmt(b)} | {fmt(c)} | **{ratio}** | {fmt_us(med(base, 1))} | "
                  f"{fmt_us(med(cmp_, 1))} | {prs} | {'-' if dcpu is None else f'{dcpu:.1f}'} | {n} | {', '.join(fails) or '-'} |")


if __name__ == "__main__":
    main()
