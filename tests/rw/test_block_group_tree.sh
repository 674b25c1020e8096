#!/usr/bin/env bash
# test_block_group_tree.sh — images with the block-group-tree feature (compat_ro; block group items
# in tree 11) are written by ubtrfs: a FUSE mount of a `ubtrfs mkfs -O block-group-tree` image and
# of a mkfs.btrfs one takes data that needs new chunks, deletes, and the kernel then reads and
# writes them; btrfs check passes after every step.
set -euo pipefail
source "$(dirname "$0")/../lib/common.sh"
ubt_skip_unless_root_fuse
ubt_need mkfs.btrfs btrfs
ubt_tool_paths
ubt_need_ubtrfs
ubt_tmpdir bgt
MNT=$T/mnt
KMNT=$T/kmnt
mkdir -p "$MNT" "$KMNT"
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
		bad "$maker image has no block-group-tree bit"
	ubt_fuse_mount "$img" "$MNT" || continue
	head -c 150M /dev/urandom >"$MNT/big"     # needs new data chunks: new block group items
	cp -a "$UBT_SRC_DIR/src" "$MNT/src"
	sum=$(md5sum <"$MNT/big")
	rm -rf "$MNT/src/codec"
	ubt_fuse_umount "$MNT"
	ubt_check_image "$img" "$maker image after ubtrfs writes"
	mount -o loop "$img" "$KMNT"
	[[ $(md5sum <"$KMNT/big") == "$sum" ]] && ok "the kernel reads ubtrfs's data ($maker)" ||
		bad "kernel read differs ($maker)"
	[[ ! -e $KMNT/src/codec && -e $KMNT/src/ctree ]] || bad "tree differs ($maker)"
	head -c 20M /dev/urandom >"$KMNT/kernel-file"
	umount "$KMNT"
	ubt_check_image "$img" "$maker image after kernel writes on top"
done
ubt_finish
