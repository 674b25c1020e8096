#!/bin/bash
# test_kernel_roundtrip.sh — the kernel writes, ubtrfs changes, the kernel reads back and writes
# again:
#  1. the kernel (mount -o compress=zstd) copies a generated tree (tests/rw/gentree.py: inline,
#     block-sized, compressed and big files, sparse files, xattrs, hard links, symlinks, fifos)
#     into the top level and into a new subvolume; a reference directory gets the same copies;
#  2. ubtrfs (read-write FUSE mount) renames, deletes, creates, appends and truncates in both
#     (tests/rw/fsops.py --mix mutate, in lockstep with the reference; every outcome must agree),
#     and the library driver adds a scripted round (rmtree, renames, appends to compressed files);
#  3. after `ubtrfs umount`: `btrfs check --readonly`; the kernel shows exactly what FUSE showed,
#     and the reference tree (mtimes and directory sizes aside);
#  4. the kernel changes the same tree again (the same lockstep workload), check passes, and
#     ubtrfs (`manifest lib`) reads the kernel's result as the reference has it.
#
# UBT_RW_SEED picks the seed (default 1); UBT_SOAK=1 runs bigger trees and more ops.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
rw_init kernel-roundtrip

SEED=${UBT_RW_SEED:-1}
HERE=$(dirname "$0")
FILES=600 OPS=3000
if [[ -n ${UBT_SOAK:-} ]]; then FILES=5000 OPS=30000; fi
IMG=$RW_TMP/img
MNT=$RW_TMP/mnt
KMNT=$RW_TMP/kmnt
REF=$RW_TMP/ref
SRC=$RW_TMP/src

# The reference and the image's tree: both compared with mtimes and directory sizes masked.
compare_ref() { # DIR-OF-IMAGE-TREE WHAT
	rw_manifest_dir "$1" "$RW_TMP/img.man"
	rw_manifest_dir "$REF" "$RW_TMP/ref.man"
	rw_loose "$RW_TMP/img.man" "$RW_TMP/img.loose"
	rw_loose "$RW_TMP/ref.man" "$RW_TMP/ref.loose"
	rw_same "$RW_TMP/ref.loose" "$RW_TMP/img.loose" "$2" || true
}

python3 "$HERE/gentree.py" --seed "$SEED" --files "$FILES" --dirs 40 --big "$SRC"
rw_log "generated tree: $(find "$SRC" | wc -l) entries, $(du -sh "$SRC" | cut -f1)"

# 1. The kernel writes.
rw_mkfs "$IMG" 1G kernel
rw_kmount "$IMG" "$KMNT" compress=zstd
cp -a "$SRC" "$KMNT/top"
btrfs subvolume create "$KMNT/sv" >/dev/null
cp -a "$SRC" "$KMNT/sv/tree"
head -c 300000 /dev/zero >"$KMNT/sv/zeros" # compresses to almost nothing
rw_kumount "$KMNT"
mkdir -p "$REF/sv"
cp -a "$SRC" "$REF/top"
cp -a "$SRC" "$REF/sv/tree"
head -c 300000 /dev/zero >"$REF/sv/zeros"
rw_check "$IMG" "after the kernel's writes"
rw_kmount "$IMG" "$KMNT" ro
compare_ref "$KMNT" "the kernel's tree is the reference"
rw_kumount "$KMNT"

# 2. ubtrfs changes it: FUSE in lockstep with the reference, then the library driver.
rw_fmount "$IMG" "$MNT"
for part in top sv; do
	if python3 "$HERE/fsops.py" --mix mutate --seed "$((SEED * 7 + ${#part}))" --ops "$OPS" --batch 300 \
		--max-names 100000 "$MNT/$part" "$REF/$part" >"$RW_TMP/ops.out" 2>&1; then
		rw_ok "ubtrfs FUSE changed /$part: $(tail -n 1 "$RW_TMP/ops.out")"
	else
		tail -n 5 "$RW_TMP/ops.out"
		rw_bad "ubtrfs FUSE workload in /$part"
	fi
done
rw_manifest_dir "$MNT" "$RW_TMP/fuse.man"
rw_fumount "$MNT"
rw_check "$IMG" "after the FUSE changes"
rw_kmount "$IMG" "$KMNT" ro
rw_manifest_dir "$KMNT" "$RW_TMP/kernel.man"
rw_kumount "$KMNT"
rw_same "$RW_TMP/fuse.man" "$RW_TMP/kernel.man" "the kernel shows exactly what the FUSE mount showed" || true

# The library driver: whole-subtree removal, renames, appends to compressed files, truncates.
script=$RW_TMP/script
: >"$script"
victim=$(cd "$REF/top" && find . -mindepth 1 -maxdepth 1 -type d | sort | head -n 1)
if [[ -n $victim ]]; then
	echo "rmtree /top/${victim#./}" >>"$script"
	rm -rf "${REF:?}/top/${victim#./}"
fi
mapfile -t comp < <(cd "$REF/sv/tree" && find . -type f -size +100k -links 1 | sort | head -n 6)
i=0
for f in "${comp[@]}"; do
	f=${f#./}
	case $((i % 3)) in
	0) # append 10000 bytes of pattern data (seed i)
		echo "append /sv/tree/$f 10000 $i" >>"$script"
		"$WORKLOAD" pattern 10000 "$i" "$(stat -c %s "$REF/sv/tree/$f")" >>"$REF/sv/tree/$f" ;;
	1)
		echo "truncate /sv/tree/$f 5000" >>"$script"
		truncate -s 5000 "$REF/sv/tree/$f" ;;
	2)
		echo "rename /sv/tree/$f /sv/moved-$i" >>"$script"
		mv "$REF/sv/tree/$f" "$REF/sv/moved-$i" ;;
	esac
	i=$((i + 1))
done
echo "mkdir /sv/libdir" >>"$script"
echo "write /sv/libdir/new 0 70000 99" >>"$script"
mkdir "$REF/sv/libdir"
"$WORKLOAD" pattern 70000 99 0 >"$REF/sv/libdir/new"
echo "expect EXDEV rename /sv/zeros /top/zeros" >>"$script"
echo "sync" >>"$script"
if "$WORKLOAD" script "$IMG" <"$script" >"$RW_TMP/script.out" 2>&1; then
	rw_ok "library driver: $(wc -l <"$script") scripted changes"
else
	cat "$RW_TMP/script.out"
	rw_bad "library driver script"
fi
"$MANIFEST" lib "$IMG" >"$RW_TMP/lib.man" 2>"$RW_TMP/lib.err" || { cat "$RW_TMP/lib.err"; rw_bad "manifest lib"; }

# 3. The kernel reads back.
rw_check "$IMG" "after the library changes"
rw_kmount "$IMG" "$KMNT" ro
rw_manifest_dir "$KMNT" "$RW_TMP/kernel.man"
compare_ref "$KMNT" "the kernel reads back the reference after ubtrfs's changes"
rw_kumount "$KMNT"
rw_same "$RW_TMP/lib.man" "$RW_TMP/kernel.man" "the kernel shows exactly what the library shows" || true

# 4. The kernel writes again on top; ubtrfs reads it.
rw_kmount "$IMG" "$KMNT" compress=zstd
for part in top sv; do
	if python3 "$HERE/fsops.py" --mix mutate --seed "$((SEED * 13 + ${#part}))" --ops "$((OPS / 2))" --batch 500 \
		--max-names 100000 "$KMNT/$part" "$REF/$part" >"$RW_TMP/ops.out" 2>&1; then
		rw_ok "the kernel changed /$part: $(tail -n 1 "$RW_TMP/ops.out")"
	else
		tail -n 5 "$RW_TMP/ops.out"
		rw_bad "kernel workload in /$part"
	fi
done
rw_kumount "$KMNT"
rw_check "$IMG" "after the kernel wrote on top"
"$MANIFEST" lib "$IMG" >"$RW_TMP/lib.man" 2>"$RW_TMP/lib.err" || { cat "$RW_TMP/lib.err"; rw_bad "manifest lib"; }
rw_loose "$RW_TMP/lib.man" "$RW_TMP/lib.loose"
rw_manifest_dir "$REF" "$RW_TMP/ref.man"
rw_loose "$RW_TMP/ref.man" "$RW_TMP/ref.loose"
rw_same "$RW_TMP/ref.loose" "$RW_TMP/lib.loose" "ubtrfs reads the kernel's second round as the reference" || true
rw_finish
