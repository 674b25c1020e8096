#!/bin/bash
# test_library_workload.sh — a seeded random workload of namespace and small-file operations
# through libubtrfs (tests/tools/ubt_workload.c: create, mkdir, symlink, fifo/device mknod, write
# incl. O_APPEND, truncate, link, unlink, rmdir, rename plain/NOREPLACE/EXCHANGE, setattr of
# mode/owner/times with ns, xattrs with CREATE/REPLACE), checked op by op against a model and
# committed in batches with ubt_sync, on mkfs.btrfs and `ubtrfs mkfs` images of several node
# sizes. After ubt_unmount: `btrfs check --readonly` passes; the kernel (mount -o ro) shows
# exactly the tree the library showed before unmounting (manifest, mtimes included), and so does
# a fresh read-only library mount; then the kernel changes the tree read-write and check passes.
#
# UBT_RW_SEED picks the seed (default 1); UBT_SOAK=1 runs more seeds and 200,000 ops each.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
rw_init library-workload

SEED=${UBT_RW_SEED:-1}
# name  mkfs    mkfs options       ops    batch compress
RUNS=(
	"kernel-16k kernel - 30000 500 -"
	"ubtrfs-4k ubtrfs -n,4096 30000 300 -"
	"kernel-4k-zstd kernel -n,4096 20000 50 zstd"
)
if [[ -n ${UBT_SOAK:-} ]]; then
	RUNS+=(
		"soak-kernel-4k kernel -n,4096 200000 1000 -"
		"soak-ubtrfs-16k ubtrfs - 200000 2000 -"
		"soak-ubtrfs-64k-xxhash ubtrfs -n,65536,--csum,xxhash 100000 100 -"
		"soak-kernel-single kernel -m,single,-n,8192 20000 1 -"
	)
fi

IMG=$RW_TMP/img
KMNT=$RW_TMP/kmnt
n=0
for run in "${RUNS[@]}"; do
	read -r name how opts ops batch compress <<<"$run"
	seed=$((SEED + n))
	n=$((n + 1))
	mkopts=()
	[[ $opts == - ]] || IFS=, read -r -a mkopts <<<"$opts"
	rw_log "=== $name: seed $seed, $ops ops, sync every $batch, $how mkfs ${mkopts[*]:-}, compress $compress"
	rw_mkfs "$IMG" 1G "$how" "${mkopts[@]}"
	cargs=()
	[[ $compress == - ]] || cargs=(--compress "$compress")
	start=$SECONDS
	if "$WORKLOAD" random "$IMG" --seed "$seed" --ops "$ops" --batch "$batch" --manifest "$RW_TMP/lib.man" \
		"${cargs[@]}" >"$RW_TMP/wl.out" 2>&1; then
		rw_ok "$name: $(tail -n 1 "$RW_TMP/wl.out") in $((SECONDS - start))s"
	else
		tail -n 20 "$RW_TMP/wl.out"
		rw_bad "$name: workload (seed $seed)"
		continue
	fi
	rw_check "$IMG" "$name after the workload" || continue
	rw_kmount "$IMG" "$KMNT" ro
	rw_manifest_dir "$KMNT" "$RW_TMP/kernel.man"
	rw_kumount "$KMNT"
	rw_same "$RW_TMP/lib.man" "$RW_TMP/kernel.man" "$name: the kernel shows the tree the library showed" || continue
	"$MANIFEST" lib "$IMG" >"$RW_TMP/relib.man" 2>&1 || rw_bad "$name: manifest lib"
	rw_same "$RW_TMP/lib.man" "$RW_TMP/relib.man" "$name: a new library mount shows it too" || true

	# The kernel can change what ubtrfs wrote: remove half of the top level, add files.
	rw_kmount "$IMG" "$KMNT"
	i=0
	for e in "$KMNT"/*; do
		if ((i++ % 2 == 0)); then rm -rf "$e"; fi
	done
	mkdir "$KMNT/kernel-was-here"
	for i in $(seq 1 50); do head -c $((i * 997)) /dev/urandom >"$KMNT/kernel-was-here/f$i"; done
	rw_kumount "$KMNT"
	rw_check "$IMG" "$name after kernel changes on top" || true
done
rw_finish
