#!/bin/bash
# test_fuse_workload.sh — a seeded random workload of real syscalls (tests/rw/fsops.py: creates,
# mkdir, symlinks, fifos, device nodes, writes incl. O_APPEND/O_TRUNC, truncate, links, unlink,
# rmdir, rename incl. NOREPLACE/EXCHANGE, chmod/chown/utimes with ns, xattrs, unlink while open)
# in a read-write `ubtrfs mount`, run in lockstep on a reference directory (ext4/tmpfs): every
# op's outcome must agree. Then the mount's tree must equal the reference (mtimes and directory
# sizes aside), `ubtrfs umount`, `btrfs check --readonly`, and the kernel must show exactly the
# tree the FUSE mount showed (mtimes included). On a mkfs.btrfs image, a `ubtrfs mkfs -n 4096`
# image, a mount with the kernel's writeback cache (-o writeback_cache), and a run that unmounts
# and mounts again every 1000 ops (cold caches, inode numbers restarting from the highest). Then
# three workloads at once in one mount (compress=zstd, writeback_cache), each against its own
# reference directory.
#
# UBT_RW_SEED picks the seed (default 1); UBT_SOAK=1 adds 100,000-op runs.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
rw_init fuse-workload

SEED=${UBT_RW_SEED:-1}
FSOPS=$(dirname "$0")/fsops.py
# name  mkfs  mkfs options  ops  batch  mount options  [remount every N ops]
RUNS=(
	"kernel-16k kernel - 20000 500 -"
	"ubtrfs-4k ubtrfs -n,4096 8000 200 commit=5"
	"wbcache-16k ubtrfs - 6000 300 writeback_cache"
	"remount-16k kernel - 8000 400 - 1000"
)
if [[ -n ${UBT_SOAK:-} ]]; then
	RUNS+=(
		"soak-kernel-4k kernel -n,4096 100000 2000 -"
		"soak-ubtrfs-16k-zstd ubtrfs - 100000 1000 compress=zstd"
	)
fi

IMG=$RW_TMP/img
MNT=$RW_TMP/mnt
KMNT=$RW_TMP/kmnt
REF=$RW_TMP/ref
n=0
for run in "${RUNS[@]}"; do
	read -r name how opts ops batch mopts remount <<<"$run"
	seed=$((SEED + n))
	n=$((n + 1))
	mkopts=()
	[[ $opts == - ]] || IFS=, read -r -a mkopts <<<"$opts"
	[[ $mopts != - ]] || mopts=""
	rw_log "=== $name: seed $seed, $ops ops, commit every $batch, $how mkfs ${mkopts[*]:-}, mount -o ${mopts:-(defaults)}"
	rw_mkfs "$IMG" 1G "$how" "${mkopts[@]}"
	rm -rf "$REF"
	mkdir -p "$REF/w"
	rw_fmount "$IMG" "$MNT" "$mopts"
	mkdir "$MNT/w"
	start=$SECONDS
	remount_args=()
	if [[ -n ${remount:-} ]]; then
		# Unmount (waiting for the daemon) and mount again, from inside the workload.
		remount_args=(--remount-every "$remount" --remount
			"'$UBTRFS_BIN' umount '$MNT' && '$UBTRFS_BIN' mount -o logfile='$RW_TMP/daemon.log'${mopts:+,$mopts} '$IMG' '$MNT'")
	fi
	if python3 "$FSOPS" --seed "$seed" --ops "$ops" --batch "$batch" "${remount_args[@]}" "$MNT/w" "$REF/w" \
		>"$RW_TMP/ops.out" 2>&1; then
		rw_ok "$name: $(tail -n 1 "$RW_TMP/ops.out") in $((SECONDS - start))s, every outcome as on the reference"
	else
		tail -n 20 "$RW_TMP/ops.out"
		rw_bad "$name: workload (seed $seed)"
	fi
	rw_manifest_dir "$MNT" "$RW_TMP/fuse.man"
	rw_manifest_dir "$MNT/w" "$RW_TMP/fusew.man"
	rw_manifest_dir "$REF/w" "$RW_TMP/ref.man"
	rw_loose "$RW_TMP/fusew.man" "$RW_TMP/fusew.loose"
	rw_loose "$RW_TMP/ref.man" "$RW_TMP/ref.loose"
	rw_same "$RW_TMP/ref.loose" "$RW_TMP/fusew.loose" "$name: the mount holds the reference tree" || true
	rw_fumount "$MNT"
	rw_check "$IMG" "$name after ubtrfs umount" || continue
	rw_kmount "$IMG" "$KMNT" ro
	rw_manifest_dir "$KMNT" "$RW_TMP/kernel.man"
	rw_kumount "$KMNT"
	rw_same "$RW_TMP/fuse.man" "$RW_TMP/kernel.man" "$name: the kernel shows the tree the FUSE mount showed" || true
done

# Three workloads at once in one mount (each in its own directory, with its own reference):
# the daemon's threads, the writeback pools and the single tree writer under concurrent load.
name=parallel-3
rw_log "=== $name: 3 x 6000 ops at once, ubtrfs mkfs, mount -o compress=zstd,writeback_cache"
rw_mkfs "$IMG" 1G ubtrfs
rm -rf "$REF"
rw_fmount "$IMG" "$MNT" compress=zstd,writeback_cache
pids=()
for i in 1 2 3; do
	mkdir -p "$MNT/p$i" "$REF/p$i"
	python3 "$FSOPS" --seed $((SEED + 100 + i)) --ops 6000 --batch 300 "$MNT/p$i" "$REF/p$i" \
		>"$RW_TMP/ops-p$i.out" 2>&1 &
	pids+=($!)
	RW_BGPIDS+=($!)
done
for i in 1 2 3; do
	if wait "${pids[$((i - 1))]}"; then
		rw_ok "$name: p$i: $(tail -n 1 "$RW_TMP/ops-p$i.out"), every outcome as on its reference"
	else
		tail -n 5 "$RW_TMP/ops-p$i.out" | cut -c1-400
		rw_bad "$name: p$i workload (seed $((SEED + 100 + i)))"
	fi
	rw_manifest_dir "$MNT/p$i" "$RW_TMP/fusep.man"
	rw_manifest_dir "$REF/p$i" "$RW_TMP/refp.man"
	rw_loose "$RW_TMP/fusep.man" "$RW_TMP/fusep.loose"
	rw_loose "$RW_TMP/refp.man" "$RW_TMP/refp.loose"
	rw_same "$RW_TMP/refp.loose" "$RW_TMP/fusep.loose" "$name: p$i holds its reference tree" || true
done
rw_manifest_dir "$MNT" "$RW_TMP/fuse.man"
rw_fumount "$MNT"
if rw_check "$IMG" "$name after ubtrfs umount"; then
	rw_kmount "$IMG" "$KMNT" ro
	rw_manifest_dir "$KMNT" "$RW_TMP/kernel.man"
	rw_kumount "$KMNT"
	rw_same "$RW_TMP/fuse.man" "$RW_TMP/kernel.man" "$name: the kernel shows the tree the FUSE mount showed" || true
fi
rw_finish
