#!/bin/bash
# wbcache_compare.sh — kernel btrfs, ubtrfs and ubtrfs -o writeback_cache side by side, 2 rounds
# alternating, a subset of ../shared/bench/fsbench.sh (seqwrite 512M, randwrite4k, fsync4k);
# prints medians and ratios to the kernel. Needs root, fio, jq; B= the ubtrfs binary.
set -u
B=${B:-$(cd "$(dirname "$0")/.." && pwd)/build/ubtrfs}
D=/var/tmp/wbb; mkdir -p $D/m
OUT=$D/results.tsv; rm -f $OUT
export WORKLOADS="seqwrite randwrite4k fsync4k" SEQ_SIZE=512M RW_SIZE=256M RW_IO_SIZE=64M FSYNC_RUNTIME=10 META_FILES=10000 RESULTS_TSV=$OUT NO_HEADER=1
for r in 1 2; do
  for t in btrfs ubtrfs ubtrfs-wbcache; do
    rm -f $D/img; truncate -s 4G $D/img
    case $t in
      btrfs) mkfs.btrfs -q -f $D/img >/dev/null; mount -o loop $D/img $D/m ;;
      ubtrfs) $B mkfs -f $D/img >/dev/null; $B mount $D/img $D/m ;;
      ubtrfs-wbcache) $B mkfs -f $D/img >/dev/null; $B mount -o writeback_cache $D/img $D/m ;;
    esac
    RUN_ID=r$r bash "${FSBENCH:-$(cd "$(dirname "$0")/../.." && pwd)/shared/bench/fsbench.sh}" $D/m $t > $D/$t-r$r.out 2>&1
    case $t in btrfs) umount $D/m ;; *) $B umount $D/m ;; esac
  done
done
python3 - "$OUT" <<'PY'
import sys, statistics, collections
rows=[l.rstrip('\n').split('\t') for l in open(sys.argv[1]) if l.strip()]
v=collections.defaultdict(list)
for r in rows:
    try: v[(r[1], r[2])].append(float(r[3]))
    except: pass
wl=sorted({k[1] for k in v})
print("workload\tbtrfs\tubtrfs\tubtrfs-wbcache\tratio ubtrfs\tratio wbcache")
for w in wl:
    k=statistics.median(v[('btrfs',w)]) if v[('btrfs',w)] else 0
    u=statistics.median(v[('ubtrfs',w)]) if v[('ubtrfs',w)] else 0
    c=statistics.median(v[('ubtrfs-wbcache',w)]) if v[('ubtrfs-wbcache',w)] else 0
    print("%s\t%.1f\t%.1f\t%.1f\t%.2f\t%.2f"%(w,k,u,c,u/k if k else 0,c/k if k else 0))
PY
