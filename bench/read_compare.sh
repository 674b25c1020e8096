#!/usr/bin/env bash
# read_compare.sh — sequential read of one big file through the kernel's btrfs and through the
# ubtrfs FUSE mount of the SAME image, alternating, cold cache each time; prints medians and the
# ratio. Needs root (loop mount, drop_caches), fio and jq.
#
# Usage: UBTRFS_BIN=build/ubtrfs bench/read_compare.sh [ROUNDS] [SIZE]   (defaults 3, 1G)
# Env: BENCH_DIR (default /var/tmp/ubtrfs-bench; must not be tmpfs),
#      COMPRESS  kernel mount option for the layout, e.g. zstd or zstd:3: the file is then
#                written compressed by the kernel and both readers decompress it,
#      COMP_PCT  fio buffer_compress_percentage for the layout (default: fio's default buffers,
#                which zstd shrinks by only ~10%; 75 gives a file zstd really compresses),
#      UBTRFS_OPTS extra ubtrfs mount options (always read-only: ro is added),
#      PERF_OUT  if set, `perf record -g` the ubtrfs daemon during the LAST ubtrfs read into
#                this file (perf.data), for `perf report -i PERF_OUT`.
# The layout uses --fallocate=none (as fsbench does): a preallocated file is never compressed.
# Per round it prints both throughputs, the per-round ratio and the daemon's CPU seconds
# (utime+stime of all its threads during the read).  Only processes and mounts this script
# started are stopped; the image is removed on exit.
set -euo pipefail
ROUNDS=${1:-3}
SIZE=${2:-1G}
UBTRFS_BIN=${UBTRFS_BIN:?set UBTRFS_BIN to the ubtrfs executable}
UBTRFS_BIN=$(realpath -e -- "$UBTRFS_BIN")
BENCH_DIR=${BENCH_DIR:-/var/tmp/ubtrfs-bench}
[[ $(id -u) -eq 0 ]] || { echo "read_compare: needs root"; exit 1; }
for t in fio jq mkfs.btrfs; do command -v "$t" >/dev/null || { echo "read_compare: needs $t"; exit 1; }; done

mkdir -p "$BENCH_DIR/mnt"
[[ $(findmnt -n -o FSTYPE --target "$BENCH_DIR") != tmpfs ]] ||
	{ echo "read_compare: $BENCH_DIR is on tmpfs" >&2; exit 2; }
IMG=$BENCH_DIR/read.img
MNT=$BENCH_DIR/mnt
DLOG=$BENCH_DIR/daemon.log
DPID=""          # the ubtrfs daemon we started (foreground mode, our child)
PERF_PID=""

alive() {  # pid exists and is not a zombie
	local st; st=$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$1/stat" 2>/dev/null) || return 1
	[[ -n $st && $st != Z ]]
}
stop_ubtrfs() {
	if mountpoint -q "$MNT"; then "$UBTRFS_BIN" umount "$MNT" >/dev/null 2>&1 || umount "$MNT"; fi
	if [[ -n $DPID ]]; then
		for _ in $(seq 1 600); do alive "$DPID" || break; sleep 0.1; done
		if alive "$DPID"; then echo "read_compare: daemon $DPID still running; TERM" >&2; kill -TERM "$DPID" || true; fi
		wait "$DPID" 2>/dev/null || true
		DPID=""
	fi
}
cleanup() {
	[[ -z $PERF_PID ]] || { kill -INT "$PERF_PID" 2>/dev/null || true; wait "$PERF_PID" 2>/dev/null || true; }
	if [[ -n $DPID ]]; then stop_ubtrfs; fi
	if mountpoint -q "$MNT"; then umount "$MNT"; fi
	rm -f "$IMG"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mount_ubtrfs() {
	"$UBTRFS_BIN" mount -f -o "ro${UBTRFS_OPTS:+,$UBTRFS_OPTS}" "$IMG" "$MNT" </dev/null >>"$DLOG" 2>&1 &
	DPID=$!
	for _ in $(seq 1 100); do
		findmnt -n -o FSTYPE --mountpoint "$MNT" 2>/dev/null | grep -q '^fuse' && return 0
		sleep 0.1
	done
	echo "read_compare: ubtrfs mount did not appear (see $DLOG)" >&2; return 1
}
dticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$DPID/stat"; }
HZ=$(getconf CLK_TCK)

truncate -s 4G "$IMG"
mkfs.btrfs -q -f "$IMG" >/dev/null
mount -o loop${COMPRESS:+,compress=$COMPRESS} "$IMG" "$MNT"
fio --name=layout --filename="$MNT/big" --rw=write --bs=1M --size="$SIZE" --end_fsync=1 --fallocate=none \
    ${COMP_PCT:+--buffer_compress_percentage=$COMP_PCT --buffer_compress_chunk=4k --refill_buffers=1} \
    --output=/dev/null
sync; btrfs filesystem sync "$MNT" >/dev/null 2>&1 || true
echo "# layout: $SIZE file, kernel mount option compress=${COMPRESS:-none}, fio compressible=${COMP_PCT:-default}%;" \
     "space used $(df -B1M --output=used "$MNT" | tail -1 | tr -d ' ') MiB (df)"
umount "$MNT"

read_once() {  # -> MiB/s
	sync
	echo 3 >/proc/sys/vm/drop_caches
	fio --name=seqread --filename="$MNT/big" --rw=read --bs=1M --size="$SIZE" --output-format=json \
	    | jq '.jobs[0].read.bw_bytes/1048576*10|round/10'
}

k=() u=() q=() d=()
for r in $(seq 1 "$ROUNDS"); do
	mount -o loop,ro "$IMG" "$MNT"
	k+=("$(read_once)")
	umount "$MNT"
	mount_ubtrfs
	if [[ -n ${PERF_OUT:-} && $r -eq $ROUNDS ]]; then
		perf record -q -g -o "$PERF_OUT" -p "$DPID" >/dev/null 2>&1 &
		PERF_PID=$!
		sleep 1
	fi
	t0=$(dticks)
	u+=("$(read_once)")
	t1=$(dticks)
	if [[ -n $PERF_PID ]]; then kill -INT "$PERF_PID"; wait "$PERF_PID" || true; PERF_PID=""; fi
	stop_ubtrfs
	d+=("$(awk -v a="$t0" -v b="$t1" -v hz="$HZ" 'BEGIN {printf "%.2f", (b-a)/hz}')")
	q+=("$(awk -v a="${u[-1]}" -v b="${k[-1]}" 'BEGIN {printf "%.2f", a/b}')")
	echo "round $r: kernel ${k[-1]} MiB/s, ubtrfs ${u[-1]} MiB/s, ratio ${q[-1]}, ubtrfs daemon cpu ${d[-1]} s"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}'; }
km=$(median "${k[@]}") um=$(median "${u[@]}")
echo "median: kernel btrfs $km MiB/s, ubtrfs (FUSE) $um MiB/s, ratio ubtrfs/kernel $(awk -v a="$um" -v b="$km" 'BEGIN {printf "%.2f", a/b}')" \
     "(median of per-round ratios $(median "${q[@]}"), daemon cpu median $(median "${d[@]}") s)"
