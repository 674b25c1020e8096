#!/usr/bin/env bash
# read_compare.sh — sequential read of one big file through the kernel's btrfs and through the
# ubtrfs FUSE mount of the SAME image, alternating, cold cache each time; prints medians and the
# ratio. Needs root (loop mount, drop_caches) and fio.
#
# Usage: UBTRFS_BIN=build/ubtrfs bench/read_compare.sh [ROUNDS] [SIZE]   (defaults 3, 1G)
# Env: BENCH_DIR (default /var/tmp/ubtrfs-bench), COMPRESS (kernel mount option for the layout,
#      e.g. zstd: the file is then written compressed and both readers decompress).
set -euo pipefail
ROUNDS=${1:-3}
SIZE=${2:-1G}
UBTRFS_BIN=${UBTRFS_BIN:?set UBTRFS_BIN to the ubtrfs executable}
BENCH_DIR=${BENCH_DIR:-/var/tmp/ubtrfs-bench}
[[ $(id -u) -eq 0 ]] || { echo "read_compare: needs root"; exit 1; }
command -v fio >/dev/null || { echo "read_compare: needs fio"; exit 1; }

mkdir -p "$BENCH_DIR/mnt"
IMG=$BENCH_DIR/read.img
MNT=$BENCH_DIR/mnt
cleanup() {
	mountpoint -q "$MNT" && { "$UBTRFS_BIN" umount "$MNT" 2>/dev/null || umount "$MNT"; }
	rm -f "$IMG"
}
trap cleanup EXIT

truncate -s 4G "$IMG"
mkfs.btrfs -q -f "$IMG" >/dev/null
mount -o loop${COMPRESS:+,compress=$COMPRESS} "$IMG" "$MNT"
fio --name=layout --filename="$MNT/big" --rw=write --bs=1M --size="$SIZE" --end_fsync=1 \
    --output=/dev/null
umount "$MNT"

read_once() {  # -> MiB/s
	sync
	echo 3 >/proc/sys/vm/drop_caches
	fio --name=seqread --filename="$MNT/big" --rw=read --bs=1M --size="$SIZE" --output-format=json \
	    | jq '.jobs[0].read.bw_bytes/1048576*10|round/10'
}

k=() u=()
for r in $(seq 1 "$ROUNDS"); do
	mount -o loop,ro "$IMG" "$MNT"
	k+=("$(read_once)")
	umount "$MNT"
	"$UBTRFS_BIN" mount -o ro "$IMG" "$MNT"
	u+=("$(read_once)")
	"$UBTRFS_BIN" umount "$MNT"
	echo "round $r: kernel ${k[-1]} MiB/s, ubtrfs ${u[-1]} MiB/s"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}'; }
km=$(median "${k[@]}") um=$(median "${u[@]}")
echo "median: kernel btrfs $km MiB/s, ubtrfs (FUSE) $um MiB/s, ratio ubtrfs/kernel $(awk -v a="$um" -v b="$km" 'BEGIN {printf "%.2f", a/b}')"
