#!/usr/bin/env bash
# test_block_group_tree.sh — images with the block-group-tree feature (compat_ro; block group items
# in tree 11) are written by ubtrfs: a FUSE mount of a `ubtrfs mkfs -O block-group-tree` image and
# of a mkfs.btrfs one takes data that needs new chunks, deletes, and the kernel then reads and
# writes them; btrfs check passes after every step.
set -euo pipefail
if [[ $(id -u) -ne 0 || ! -c /dev/fuse ]]; then
	echo "SKIP: needs root and /dev/fuse"
	exit 0
fi
UBTRFS_BIN=${UBTRFS_BIN:?}
T=$(mktemp -d /tmp/ubt-bgt.XXXXXX)
MNT=$T/mnt
KMNT=$T/kmnt
mkdir -p "$MNT" "$KMNT"
cleanup() {
	mountpoint -q "$MNT" && { "$UBTRFS_BIN" umount "$MNT" || umount -l "$MNT"; }
	mountpoint -q "$KMNT" && umount "$KMNT"
	rm -rf "$T"
}
trap cleanup EXIT
fails=0
check() {
	if btrfs check --readonly "$1" >"$T/check.log" 2>&1 && ! grep -qE "ERROR|checksum verify failed" "$T/check.log"; then
		echo "ok: btrfs check ($2)"
	else
		echo "FAIL: btrfs check ($2)"; cat "$T/check.log"; fails=$((fails + 1))
	fi
}
for maker in ubtrfs progs; do
	img=$T/$maker.img
	if [[ $maker == ubtrfs ]]; then
		"$UBTRFS_BIN" mkfs -q -f -b 512M -O block-group-tree "$img" >/dev/null
	else
		truncate -s 512M "$img"
		if ! mkfs.btrfs -q -f -O block-group-tree "$img" >/dev/null 2>&1; then
			echo "note: this mkfs.btrfs cannot make block-group-tree images; only the ubtrfs one is tested"
			continue
		fi
	fi
	btrfs inspect-internal dump-super "$img" | grep -q "compat_ro_flags.*0x[0-9a-f]*[89a-f]$" ||
		{ echo "FAIL: $maker image has no block-group-tree bit"; fails=$((fails + 1)); }
	"$UBTRFS_BIN" mount "$img" "$MNT"
	head -c 150M /dev/urandom >"$MNT/big"     # needs new data chunks: new block group items
	cp -a "$UBT_SRC_DIR/src" "$MNT/src"
	sum=$(md5sum <"$MNT/big")
	rm -rf "$MNT/src/codec"
	"$UBTRFS_BIN" umount "$MNT"
	check "$img" "$maker image after ubtrfs writes"
	mount -o loop "$img" "$KMNT"
	[[ $(md5sum <"$KMNT/big") == "$sum" ]] && echo "ok: the kernel reads ubtrfs's data ($maker)" ||
		{ echo "FAIL: kernel read differs ($maker)"; fails=$((fails + 1)); }
	[[ ! -e $KMNT/src/codec && -e $KMNT/src/ctree ]] || { echo "FAIL: tree differs ($maker)"; fails=$((fails + 1)); }
	head -c 20M /dev/urandom >"$KMNT/kernel-file"
	umount "$KMNT"
	check "$img" "$maker image after kernel writes on top"
done
if ((fails)); then
	echo "FAILED: $fails check(s)"
	exit 1
fi
echo "block-group-tree: all checks passed"
