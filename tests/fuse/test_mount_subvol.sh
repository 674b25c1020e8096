#!/bin/bash
# test_mount_subvol.sh — subvol=PATH and subvolid=N mounts of an image with nested subvolumes
# (made with the kernel's btrfs on a loop device: mkfs.btrfs here has no --subvol), and inode
# numbers that stay unique across subvolumes in one mount.
set -u

source "$(dirname "$0")/../lib/common.sh"
ubt_skip_unless_root_fuse
ubt_skip_unless_cmds btrfs-progs mkfs.btrfs btrfs
ubt_need_ubtrfs

ubt_tmpdir fuse-subvol
MNT=$T/mnt
KMNT=$T/kmnt


mkdir -p "$MNT" "$KMNT"
truncate -s 256M "$T/img"
mkfs.btrfs -q -f "$T/img" >"$T/mkfs.log" 2>&1 || { cat "$T/mkfs.log"; echo "FAIL: mkfs"; exit 1; }
if ! mount -o loop "$T/img" "$KMNT" 2>"$T/out"; then
	echo "SKIP: cannot loop-mount btrfs with the kernel: $(cat "$T/out")"
	exit 0
fi
echo top > "$KMNT/topfile"
btrfs -q subvolume create "$KMNT/sv1" >/dev/null
mkdir -p "$KMNT/sv1/dir"
echo one > "$KMNT/sv1/dir/f"
head -c 200000 /dev/urandom > "$KMNT/sv1/data"
btrfs -q subvolume create "$KMNT/sv1/nested" >/dev/null
echo two > "$KMNT/sv1/nested/g"
btrfs -q subvolume create "$KMNT/sv2" >/dev/null
echo three > "$KMNT/sv2/h"
cp -a "$KMNT" "$T/ref"
ID1=$(btrfs subvolume list "$KMNT" | awk '$NF == "sv1" { print $2 }')
IDN=$(btrfs subvolume list "$KMNT" | awk '$NF == "sv1/nested" { print $2 }')
umount "$KMNT"

check_mount() { # NAME OPTS REFDIR
	if ! "$UBTRFS_BIN" mount -o "ro,$2" "$T/img" "$MNT" 2>"$T/out"; then
		bad "$1: mount failed: $(cat "$T/out")"
		return
	fi
	if diff -r --no-dereference "$3" "$MNT" >"$T/diff" 2>&1; then ok "$1: contents"; else bad "$1: contents differ"; head "$T/diff"; fi
	"$UBTRFS_BIN" umount "$MNT" || bad "$1: umount"
}
check_mount "subvol=sv1" "subvol=sv1" "$T/ref/sv1"
check_mount "subvol=/sv1" "subvol=/sv1" "$T/ref/sv1"
check_mount "subvol=sv1/nested" "subvol=sv1/nested" "$T/ref/sv1/nested"
check_mount "subvolid=$ID1" "subvolid=$ID1" "$T/ref/sv1"
check_mount "subvolid=$IDN" "subvolid=$IDN" "$T/ref/sv1/nested"
check_mount "subvolid=5 (top level)" "subvolid=5" "$T/ref"
check_mount "subvol=sv2" "subvol=sv2" "$T/ref/sv2"

# One mount across subvolumes: st_dev is one value, so inode numbers must not collide.
"$UBTRFS_BIN" mount -o ro "$T/img" "$MNT" || bad "top-level mount"
dups=$(find "$MNT" -printf '%i\n' | sort | uniq -d | wc -l)
[ "$dups" = 0 ] && ok "inode numbers unique across subvolumes" || bad "$dups inode numbers shared across subvolumes"
cmp -s "$T/ref/sv1/data" "$MNT/sv1/data" && ok "data in a subvolume" || bad "data in a subvolume"
"$UBTRFS_BIN" umount "$MNT" || bad "umount"

if "$UBTRFS_BIN" mount -o ro,subvol=sv1,subvolid=$ID1 "$T/img" "$MNT" 2>/dev/null; then
	bad "subvol= with subvolid= accepted"
	"$UBTRFS_BIN" umount "$MNT"
else
	ok "subvol= with subvolid= refused"
fi

ubt_finish
