#!/bin/bash
# test_many_files.sh — 100,000 files in one directory and 100,000 over a deep tree of 2,000
# directories, created through libubtrfs (tests/tools/ubt_workload many; one in seven files gets
# a few bytes of inline data), committed every 5,000 creates: `btrfs check --readonly` passes,
# the kernel lists exactly the names the driver created, and the driver's peak RSS (getrusage
# ru_maxrss) stays under UBT_RSS_LIMIT_MIB (default 300): memory must not grow with the number
# of files. The same again with a single commit at the end (everything in one transaction).
#
# UBT_SOAK=1: 1,000,000 + 1,000,000 files, and the FUSE variant (the same count through
# `ubtrfs mount` with a shell loop of creates in one directory).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
rw_init many-files

LIMIT_MIB=${UBT_RSS_LIMIT_MIB:-300}
N=100000 DIRS=2000
if [[ -n ${UBT_SOAK:-} ]]; then N=1000000 DIRS=20000; fi
IMG=$RW_TMP/img
KMNT=$RW_TMP/kmnt
MNT=$RW_TMP/mnt

for batch in 5000 100000000; do
	rw_log "=== $N files flat + $N in $DIRS dirs, commit every $batch creates"
	rw_mkfs "$IMG" 8G kernel
	start=$SECONDS
	if ! "$WORKLOAD" many "$IMG" --flat "$N" --deep "$N" --dirs "$DIRS" --batch "$batch" \
		--list "$RW_TMP/names" >"$RW_TMP/many.out" 2>&1; then
		tail -n 20 "$RW_TMP/many.out"
		rw_die "ubt_workload many"
	fi
	cat "$RW_TMP/many.out"
	rss=$(awk '$1 == "peak_rss_kib" { print $2 }' "$RW_TMP/many.out")
	rw_log "peak RSS of the driver: $((rss / 1024)) MiB ($rss KiB), $((SECONDS - start))s"
	if ((rss < LIMIT_MIB * 1024)); then
		rw_ok "peak RSS $((rss / 1024)) MiB < $LIMIT_MIB MiB"
	else
		rw_bad "peak RSS $((rss / 1024)) MiB >= $LIMIT_MIB MiB"
	fi
	rw_check "$IMG" "$((2 * N)) files (commit every $batch)" || true
	rw_kmount "$IMG" "$KMNT" ro
	(cd "$KMNT" && find . | LC_ALL=C sort) >"$RW_TMP/kernel.names"
	nflat=$(find "$KMNT/flat" -mindepth 1 | wc -l)
	rw_kumount "$KMNT"
	LC_ALL=C sort "$RW_TMP/names" >"$RW_TMP/lib.names"
	rw_same "$RW_TMP/lib.names" "$RW_TMP/kernel.names" "the kernel lists the names the library created" || true
	[[ $nflat -eq $N ]] && rw_ok "the kernel lists $nflat entries in /flat" || rw_bad "/flat has $nflat entries, not $N"
done

if [[ -n ${UBT_SOAK:-} ]]; then
	rw_log "=== FUSE: $N files in one directory"
	rw_mkfs "$IMG" 8G kernel
	rw_fmount "$IMG" "$MNT"
	mkdir "$MNT/flat"
	python3 -c '
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    fd = os.open("%s/f%07d" % (d, i), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    if i % 7 == 0:
        os.write(fd, b"x" * (i % 100 + 1))
    os.close(fd)
' "$MNT/flat" "$N"
	nf=$(find "$MNT/flat" -mindepth 1 | wc -l)
	[[ $nf -eq $N ]] && rw_ok "FUSE lists $nf files" || rw_bad "FUSE lists $nf files, not $N"
	for p in ${RW_FPIDS[$MNT]}; do
		rw_log "daemon $p: $(awk '/VmHWM/ { print $2, $3 }' "/proc/$p/status") peak RSS"
	done
	rw_fumount "$MNT"
	rw_check "$IMG" "$N files through FUSE" || true
	rw_kmount "$IMG" "$KMNT" ro
	nk=$(find "$KMNT/flat" -mindepth 1 | wc -l)
	rw_kumount "$KMNT"
	[[ $nk -eq $N ]] && rw_ok "the kernel lists $nk files" || rw_bad "the kernel lists $nk files, not $N"
fi
rw_finish
