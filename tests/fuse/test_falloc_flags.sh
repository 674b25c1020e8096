#!/bin/bash
# test_falloc_flags.sh — fallocate(1) and chattr/lsattr on a FUSE mount: -l (preallocate,
# size grows), -n (keep size), -p (punch hole), -z (zero range), with the expected contents and
# block counts; chattr +C on an empty file and a directory (inherited), +c, +i and +a (the
# writes they forbid fail with EPERM), lsattr; -o nodatacow. Then btrfs check --readonly, and
# the kernel reads the same bytes and flags.
set -u

source "$(dirname "$0")/../lib/common.sh"
ubt_skip_unless_root_fuse
ubt_need mkfs.btrfs btrfs fallocate chattr lsattr cmp
ubt_need_ubtrfs

ubt_tmpdir falloc
IMG=$T/img
MNT=$T/mnt
KMNT=$T/kmnt
REF=$T/ref

attrs() { lsattr -d "$1" 2>/dev/null | awk '{ print $1 }'; }
has_attr() { attrs "$1" | grep -q "$2"; }
blocks() { stat -c %b "$1"; }

mkdir -p "$MNT" "$KMNT" "$REF"
truncate -s 512M "$IMG"
mkfs.btrfs -q -f "$IMG" >/dev/null 2>&1 || { echo "FAIL: mkfs.btrfs"; exit 1; }
"$UBTRFS_BIN" mount "$IMG" "$MNT" >"$T/mount.out" 2>&1 || { echo "FAIL: mount: $(cat "$T/mount.out")"; exit 1; }

# fallocate -l: size and blocks grow, contents read as zeros; -n keeps the size.
check "fallocate -l 1M" fallocate -l 1M "$MNT/pre"
check "size 1M" test "$(stat -c %s "$MNT/pre")" = 1048576
check "blocks 2048" test "$(blocks "$MNT/pre")" = 2048
head -c 1048576 /dev/zero >"$REF/pre"
check "reads zeros" cmp "$MNT/pre" "$REF/pre"
check "fallocate -n (keep size)" fallocate -n -o 1M -l 256K "$MNT/pre"
check "size kept" test "$(stat -c %s "$MNT/pre")" = 1048576
check "blocks 2560" test "$(blocks "$MNT/pre")" = 2560
# A write into the preallocated range, then punch and zero (unaligned edges).
head -c 300000 /dev/urandom >"$T/rand"
dd if="$T/rand" of="$MNT/pre" bs=1000 seek=100 conv=notrunc status=none
dd if="$T/rand" of="$REF/pre" bs=1000 seek=100 conv=notrunc status=none
check "fallocate -p" fallocate -p -o 150001 -l 70000 "$MNT/pre"
dd if=/dev/zero of="$REF/pre" bs=1 seek=150001 count=70000 conv=notrunc status=none
check "fallocate -z" fallocate -z -o 250123 -l 9999 "$MNT/pre"
dd if=/dev/zero of="$REF/pre" bs=1 seek=250123 count=9999 conv=notrunc status=none
check "fallocate -z past EOF grows" fallocate -z -o 1000000 -l 100000 "$MNT/pre"
truncate -s 1100000 "$REF/pre"
check "contents after write/punch/zero" cmp "$MNT/pre" "$REF/pre"
check "fallocate -c refused" bash -c "! fallocate -c -o 0 -l 4096 '$MNT/pre' 2>/dev/null" 2>/dev/null

# chattr/lsattr: NOCOW on an empty file and on a directory (inherited), compression, noatime.
touch "$MNT/nocow"
check "chattr +C empty file" chattr +C "$MNT/nocow"
check "lsattr shows C" has_attr "$MNT/nocow" C
head -c 200000 /dev/urandom >"$MNT/nocow"
cp "$MNT/nocow" "$REF/nocow"
dd if=/dev/urandom of="$T/blk" bs=4096 count=2 status=none
dd if="$T/blk" of="$MNT/nocow" bs=4096 seek=3 conv=notrunc status=none
dd if="$T/blk" of="$REF/nocow" bs=4096 seek=3 conv=notrunc status=none
check "nocow contents" cmp "$MNT/nocow" "$REF/nocow"
mkdir "$MNT/dir"
check "chattr +C dir" chattr +C "$MNT/dir"
echo hello >"$MNT/dir/child"
check "child inherits C" has_attr "$MNT/dir/child" C
check "chattr +c refused on a NOCOW dir" bash -c "! chattr +c '$MNT/dir' 2>/dev/null" 2>/dev/null
mkdir "$MNT/cdir"
check "chattr +c dir" chattr +c "$MNT/cdir"
head -c 65536 /dev/zero >"$MNT/cdir/z"
check "child inherits c" has_attr "$MNT/cdir/z" c
check "chattr +A" chattr +A "$MNT/pre"
check "lsattr shows A" has_attr "$MNT/pre" A
check "chattr -A" chattr -A "$MNT/pre"
check "lsattr A gone" bash -c "! lsattr -d '$MNT/pre' | awk '{print \$1}' | grep -q A" 2>/dev/null

# Immutable and append-only.
echo data >"$MNT/imm"
check "chattr +i" chattr +i "$MNT/imm"
check "write to +i fails" bash -c "! echo x >>'$MNT/imm' 2>/dev/null" 2>/dev/null
check "rm +i fails" bash -c "! rm -f '$MNT/imm' 2>/dev/null" 2>/dev/null
check "mv +i fails" bash -c "! mv '$MNT/imm' '$MNT/imm2' 2>/dev/null" 2>/dev/null
check "chmod +i fails" bash -c "! chmod 600 '$MNT/imm' 2>/dev/null" 2>/dev/null
check "fallocate +i fails" bash -c "! fallocate -l 8192 '$MNT/imm' 2>/dev/null" 2>/dev/null
echo one >"$MNT/app"
check "chattr +a" chattr +a "$MNT/app"
check "append to +a" bash -c "echo two >>'$MNT/app'"
check "overwrite +a fails" bash -c "! echo three >'$MNT/app' 2>/dev/null" 2>/dev/null
check "truncate +a fails" bash -c "! truncate -s 0 '$MNT/app' 2>/dev/null" 2>/dev/null
check "punch +a fails" bash -c "! fallocate -p -o 0 -l 1 '$MNT/app' 2>/dev/null" 2>/dev/null
check "rm +a fails" bash -c "! rm -f '$MNT/app' 2>/dev/null" 2>/dev/null
printf 'one\ntwo\n' >"$REF/app"
check "append-only contents" cmp "$MNT/app" "$REF/app"
check "lsattr shows i" has_attr "$MNT/imm" i
check "lsattr shows a" has_attr "$MNT/app" a
flags_fuse=$(cd "$MNT" && lsattr -d pre nocow dir dir/child cdir cdir/z imm app 2>&1 | awk '{ print $1 }')

"$UBTRFS_BIN" umount "$MNT" >"$T/umount.out" 2>&1 || bad "umount: $(cat "$T/umount.out")"
check "btrfs check" btrfs check --readonly "$IMG" >"$T/check.out" 2>&1 || cat "$T/check.out"

# nodatacow mount option.
if "$UBTRFS_BIN" mount -o nodatacow "$IMG" "$MNT" >"$T/mount.out" 2>&1; then
	echo x >"$MNT/mount-nocow"
	check "nodatacow: new file has C" has_attr "$MNT/mount-nocow" C
	"$UBTRFS_BIN" umount "$MNT" >/dev/null 2>&1
	check "btrfs check (nodatacow)" btrfs check --readonly "$IMG" >"$T/check.out" 2>&1
else
	bad "mount -o nodatacow: $(cat "$T/mount.out")"
fi

if grep -qw btrfs /proc/filesystems || modprobe btrfs 2>/dev/null; then
	if mount -o loop,ro "$IMG" "$KMNT"; then
		for f in pre nocow app; do
			check "kernel reads $f" cmp "$KMNT/$f" "$REF/$f"
		done
		flags_kernel=$(cd "$KMNT" && lsattr -d pre nocow dir dir/child cdir cdir/z imm app 2>&1 | awk '{ print $1 }')
		check "kernel sees the same attributes" test "$flags_fuse" = "$flags_kernel"
		check "kernel: mount-nocow has C" has_attr "$KMNT/mount-nocow" C
		umount "$KMNT"
	else
		bad "kernel loop mount"
	fi
else
	echo "SKIP: kernel comparison (no btrfs in the kernel)"
fi

ubt_finish
