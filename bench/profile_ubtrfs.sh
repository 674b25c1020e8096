#!/usr/bin/env bash
# profile_ubtrfs.sh — run one or more shared fsbench workloads on a fresh ubtrfs mount while
# `perf record` samples the ubtrfs daemon, then print the hottest functions.
# Needs root, perf, fio, jq, cc, and the shared bench (FSBENCH, default ../shared/bench/fsbench.sh
# next to this repository).
#
# Usage: UBTRFS_BIN=build/ubtrfs bench/profile_ubtrfs.sh WORKLOAD... 
#        (fsbench workload names: seqwrite seqread randwrite4k fsync4k metadata compwrite)
# Env:   BENCH_DIR   scratch dir on a real disk (default /var/tmp/ubtrfs-prof)
#        IMG_SIZE    (default 4G)     UBTRFS_OPTS  mount options (e.g. compress=zstd:1)
#        PERF_OUT    perf.data path (default $BENCH_DIR/perf.data; kept afterwards)
#        PERF_ARGS   extra `perf record` arguments (default: -g -F 999)
#        TOP         lines of the flat profile to print (default 40)
#        any fsbench.sh variable (META_FILES, SEQ_SIZE, ...) is passed through.
# No REMOUNT_CMD is given (perf follows one daemon), so the cold-cache phases (seqread,
# meta_statcold) only drop the kernel's caches, not the daemon's: profile seqread with
# bench/read_compare.sh PERF_OUT=... instead.
set -euo pipefail
[[ $# -ge 1 ]] || { sed -n '2,8p' "$0" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
FSBENCH=${FSBENCH:-$HERE/../../shared/bench/fsbench.sh}
UBTRFS_BIN=$(realpath -e -- "${UBTRFS_BIN:?set UBTRFS_BIN to the ubtrfs executable}")
BENCH_DIR=${BENCH_DIR:-/var/tmp/ubtrfs-prof}
IMG_SIZE=${IMG_SIZE:-4G}
PERF_OUT=${PERF_OUT:-$BENCH_DIR/perf.data}
PERF_ARGS=${PERF_ARGS:--g -F 999}
TOP=${TOP:-40}
[[ $(id -u) -eq 0 ]] || { echo "profile_ubtrfs: needs root" >&2; exit 1; }
for t in perf fio jq cc; do command -v "$t" >/dev/null || { echo "profile_ubtrfs: needs $t" >&2; exit 1; }; done
[[ -x $FSBENCH ]] || { echo "profile_ubtrfs: no fsbench at $FSBENCH (set FSBENCH)" >&2; exit 1; }

mkdir -p "$BENCH_DIR/mnt"
[[ $(findmnt -n -o FSTYPE --target "$BENCH_DIR") != tmpfs ]] ||
	{ echo "profile_ubtrfs: $BENCH_DIR is on tmpfs" >&2; exit 2; }
IMG=$BENCH_DIR/prof.img
MNT=$BENCH_DIR/mnt
DPID="" PERF_PID=""

alive() { local st; st=$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$1/stat" 2>/dev/null) || return 1; [[ $st != Z ]]; }
cleanup() {
	if [[ -n $PERF_PID ]]; then kill -INT "$PERF_PID" 2>/dev/null || true; wait "$PERF_PID" 2>/dev/null || true; fi
	if mountpoint -q "$MNT"; then "$UBTRFS_BIN" umount "$MNT" >/dev/null 2>&1 || umount "$MNT"; fi
	if [[ -n $DPID ]]; then
		for _ in $(seq 1 600); do alive "$DPID" || break; sleep 0.1; done
		if alive "$DPID"; then kill -TERM "$DPID" || true; fi
		wait "$DPID" 2>/dev/null || true
	fi
	rm -f "$IMG"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

truncate -s "$IMG_SIZE" "$IMG"
"$UBTRFS_BIN" mkfs -f "$IMG" >/dev/null
"$UBTRFS_BIN" mount -f ${UBTRFS_OPTS:+-o "$UBTRFS_OPTS"} "$IMG" "$MNT" </dev/null >>"$BENCH_DIR/daemon.log" 2>&1 &
DPID=$!
for _ in $(seq 1 100); do findmnt -n -o FSTYPE --mountpoint "$MNT" 2>/dev/null | grep -q '^fuse' && break; sleep 0.1; done
findmnt -n --mountpoint "$MNT" >/dev/null || { echo "profile_ubtrfs: mount failed" >&2; exit 1; }

# shellcheck disable=SC2086
perf record $PERF_ARGS -o "$PERF_OUT" -p "$DPID" >"$BENCH_DIR/perf-record.log" 2>&1 &
PERF_PID=$!
sleep 1
rc=0
WORKLOADS="$*" FS_PID="$DPID" NO_HEADER=1 RESULTS_TSV="" "$FSBENCH" "$MNT" ubtrfs-prof || rc=$?
kill -INT "$PERF_PID"; wait "$PERF_PID" || true; PERF_PID=""
echo "# fsbench rc=$rc; perf data: $PERF_OUT"
echo "# flat profile of the daemon (self %, all threads, user + kernel):"
perf report -i "$PERF_OUT" --no-children --sort symbol --stdio -g none --percent-limit 0.5 2>/dev/null |
	grep -v '^#' | grep -v '^$' | head -n "$TOP"
echo "# by thread (comm):"
perf report -i "$PERF_OUT" --no-children --sort comm --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 10
exit "$rc"
