#!/bin/bash
# test_snapshot_cow.sh — ubtrfs changes a subvolume and its snapshot, which share tree blocks.
#
# The kernel (mkfs.btrfs -n 4096, so the subvolume's tree has several levels) makes a subvolume
# with 20,000 small files (tests/rw/gentree.py), snapshots it, and the image is checked. Then a
# read-write `ubtrfs mount` changes both sides in turns — writes, appends, truncates, creates,
# deletes and renames (tests/rw/fsops.py --mix mutate, in lockstep with a reference copy of each
# side), plus `rm -rf` of whole directories on each side — so shared blocks are COWed from
# either side, and blocks still shared are freed from one. After `ubtrfs umount`:
# `btrfs check --readonly` (shared and full backrefs, reference counts), the kernel sees each
# side's own changes only (each side against its reference), and exactly what FUSE showed.
# Finally the kernel deletes the snapshot (its cleaner walks the shared tree) and check passes.
#
# UBT_RW_SEED picks the seed (default 1); UBT_SOAK=1: 100,000 files and more ops.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
rw_init snapshot-cow

SEED=${UBT_RW_SEED:-1}
HERE=$(dirname "$0")
FILES=${UBT_SNAPSHOT_FILES:-20000} OPS=1500
if [[ -n ${UBT_SOAK:-} ]]; then FILES=100000 OPS=10000; fi
IMG=$RW_TMP/img
MNT=$RW_TMP/mnt
KMNT=$RW_TMP/kmnt
REF=$RW_TMP/ref

compare_side() { # TREE-DIR SIDE WHAT
	rw_manifest_dir "$1" "$RW_TMP/side.man"
	rw_manifest_dir "$REF/$2" "$RW_TMP/ref.man"
	rw_loose "$RW_TMP/side.man" "$RW_TMP/side.loose"
	rw_loose "$RW_TMP/ref.man" "$RW_TMP/ref.loose"
	rw_same "$RW_TMP/ref.loose" "$RW_TMP/side.loose" "$3" || true
}

rw_mkfs "$IMG" 2G kernel -n 4096
rw_kmount "$IMG" "$KMNT"
btrfs subvolume create "$KMNT/src" >/dev/null
python3 "$HERE/gentree.py" --seed "$SEED" --files "$FILES" --dirs 200 "$KMNT/src"
sync
btrfs subvolume snapshot "$KMNT/src" "$KMNT/snap" >/dev/null
levels=$(btrfs inspect-internal dump-tree -t 256 "$(awk -v d="$KMNT" '$2 == d { print $1 }' /proc/mounts)" 2>/dev/null |
	awk '/^node .* level/ { for (i = 1; i < NF; i++) if ($i == "level") { print $(i + 1); exit } }' || true)
rw_kumount "$KMNT"
rw_log "subvolume src: $FILES files, root level ${levels:-?} (nodesize 4096)"
[[ ${levels:-0} -ge 2 ]] || rw_bad "the subvolume's tree should have at least 3 levels (root level ${levels:-?})"
mkdir -p "$REF"
python3 "$HERE/gentree.py" --seed "$SEED" --files "$FILES" --dirs 200 "$REF/src"
cp -a "$REF/src" "$REF/snap"
rw_check "$IMG" "the kernel's subvolume and snapshot"
rw_kmount "$IMG" "$KMNT" ro
compare_side "$KMNT/src" src "the kernel's src is the reference"
compare_side "$KMNT/snap" snap "the kernel's snap is the reference"
rw_kumount "$KMNT"

# ubtrfs changes both sides, in turns.
rw_fmount "$IMG" "$MNT"
round=0
for side in snap src snap src; do
	round=$((round + 1))
	if python3 "$HERE/fsops.py" --mix mutate --seed "$((SEED * 100 + round))" --ops "$OPS" --batch 250 \
		--max-names 1000000 "$MNT/$side" "$REF/$side" >"$RW_TMP/ops.out" 2>&1; then
		rw_ok "round $round: ubtrfs changed $side: $(tail -n 1 "$RW_TMP/ops.out")"
	else
		tail -n 5 "$RW_TMP/ops.out"
		rw_bad "round $round: ubtrfs workload in $side"
	fi
	# a whole directory goes: its blocks are shared with the other side (or were COWed)
	d=$(cd "$REF/$side" && find . -mindepth 1 -maxdepth 1 -type d | sort | sed -n "${round}p")
	if [[ -n $d ]]; then
		rm -rf "${MNT:?}/$side/${d#./}" && rm -rf "${REF:?}/$side/${d#./}" ||
			rw_bad "rm -rf $side/${d#./}"
	fi
done
sync "$MNT/src"
rw_manifest_dir "$MNT" "$RW_TMP/fuse.man"
rw_fumount "$MNT"

rw_check "$IMG" "after ubtrfs changed both sides"
rw_kmount "$IMG" "$KMNT" ro
rw_manifest_dir "$KMNT" "$RW_TMP/kernel.man"
compare_side "$KMNT/src" src "the kernel sees src's own changes only"
compare_side "$KMNT/snap" snap "the kernel sees snap's own changes only"
rw_kumount "$KMNT"
rw_same "$RW_TMP/fuse.man" "$RW_TMP/kernel.man" "the kernel shows exactly what the FUSE mount showed" || true

# The kernel drops the snapshot: its cleaner frees the blocks only the snapshot still held.
rw_kmount "$IMG" "$KMNT"
btrfs subvolume delete "$KMNT/snap" >/dev/null
btrfs subvolume sync "$KMNT" >/dev/null 2>&1 || true
touch "$KMNT/src/after-delete"
rw_kumount "$KMNT"
rw_check "$IMG" "after the kernel deleted the snapshot" || true
rw_finish
