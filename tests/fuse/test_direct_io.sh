#!/bin/bash
# test_direct_io.sh — O_DIRECT through a FUSE mount: dd oflag=direct / iflag=direct, aligned
# (the library's direct path) and unaligned (its buffered fallback), mixed with buffered reads
# and writes of the same files, a NOCOW file, compared with a reference copy; then unmount,
# btrfs check --readonly, a remount and the kernel read the same bytes.
set -u

source "$(dirname "$0")/../lib/common.sh"
ubt_skip_unless_root_fuse
ubt_need mkfs.btrfs btrfs dd cmp chattr
ubt_need_ubtrfs

ubt_tmpdir dio
IMG=$T/img
MNT=$T/mnt
KMNT=$T/kmnt
REF=$T/ref

# ddboth ARGS...: the same dd into the mount and into the reference directory (of=NAME relative).
ddboth() {
	local of=$1 flags=$2
	shift 2
	dd of="$MNT/$of" $flags conv=notrunc status=none "$@" && dd of="$REF/$of" conv=notrunc status=none "$@"
}

mkdir -p "$MNT" "$KMNT" "$REF"
truncate -s 512M "$IMG"
mkfs.btrfs -q -f "$IMG" >/dev/null 2>&1 || { echo "FAIL: mkfs.btrfs"; exit 1; }
head -c $((8 << 20)) /dev/urandom >"$T/rand"
"$UBTRFS_BIN" mount "$IMG" "$MNT" >"$T/mount.out" 2>&1 || { echo "FAIL: mount: $(cat "$T/mount.out")"; exit 1; }

# Aligned direct writes: a new file, overwrites, an extension, a gap.
check "dd oflag=direct 4M (bs 64K)" ddboth a oflag=direct if="$T/rand" bs=64K count=64
check "dd oflag=direct overwrite (bs 4K)" ddboth a oflag=direct if="$T/rand" bs=4K count=100 seek=300 skip=7
check "dd oflag=direct extend past a gap" ddboth a oflag=direct if="$T/rand" bs=1M count=2 seek=6 skip=3
check "direct 4M file" cmp "$MNT/a" "$REF/a"
check "dd iflag=direct aligned" bash -c "dd if='$MNT/a' iflag=direct bs=128K status=none | cmp - '$REF/a'"
check "dd iflag=direct 4K pieces at an offset" bash -c \
	"cmp <(dd if='$MNT/a' iflag=direct bs=4K skip=250 count=300 status=none) \
	     <(dd if='$REF/a' bs=4K skip=250 count=300 status=none)"

# Unaligned direct writes and reads: the buffered fallback.
check "dd oflag=direct unaligned (bs 1000)" ddboth a oflag=direct if="$T/rand" bs=1000 count=777 seek=1234 skip=5
check "dd oflag=direct unaligned tail" ddboth b oflag=direct if="$T/rand" bs=12345 count=3
check "dd iflag=direct unaligned (bs 1000)" bash -c \
	"cmp <(dd if='$MNT/a' iflag=direct bs=1000 skip=3333 count=999 status=none) \
	     <(dd if='$REF/a' bs=1000 skip=3333 count=999 status=none)"
check "unaligned file" cmp "$MNT/b" "$REF/b"
check "dd iflag=direct of an unaligned size" bash -c "dd if='$MNT/b' iflag=direct bs=64K status=none | cmp - '$REF/b'"

# Coherency with buffered IO on the same file, both ways.
check "buffered write" ddboth a "" if="$T/rand" bs=4096 count=50 seek=20 skip=900
check "direct read sees the buffered write" bash -c "dd if='$MNT/a' iflag=direct bs=1M status=none | cmp - '$REF/a'"
check "direct write" ddboth a oflag=direct if="$T/rand" bs=8K count=40 seek=5 skip=1000
check "buffered read sees the direct write" cmp "$MNT/a" "$REF/a"
check "buffered and direct at once" bash -c "
	dd if='$T/rand' of='$MNT/c' bs=4K count=256 conv=notrunc status=none &
	dd if='$T/rand' of='$MNT/d' bs=4K count=256 oflag=direct conv=notrunc status=none &
	wait"
head -c $((1 << 20)) "$T/rand" >"$REF/c" && cp "$REF/c" "$REF/d"
check "both files" bash -c "cmp '$MNT/c' '$REF/c' && cmp '$MNT/d' '$REF/d'"

# A NOCOW file: direct writes go in place (the write-through path).
touch "$MNT/n" "$REF/n"
check "chattr +C" chattr +C "$MNT/n"
check "nocow direct write" ddboth n oflag=direct if="$T/rand" bs=64K count=16
check "nocow direct overwrite" ddboth n oflag=direct if="$T/rand" bs=4K count=8 seek=3 skip=400
check "nocow file" bash -c "dd if='$MNT/n' iflag=direct bs=64K status=none | cmp - '$REF/n'"

sync -f "$MNT/a"
"$UBTRFS_BIN" umount "$MNT" >"$T/umount.out" 2>&1 || bad "umount: $(cat "$T/umount.out")"
check "btrfs check" btrfs check --readonly "$IMG" >"$T/check.out" 2>&1 || cat "$T/check.out"

# A remount reads the same (direct and buffered).
if "$UBTRFS_BIN" mount "$IMG" "$MNT" >"$T/mount.out" 2>&1; then
	for f in a b c d n; do
		check "remount: $f" cmp "$MNT/$f" "$REF/$f"
		check "remount: $f (iflag=direct)" bash -c "dd if='$MNT/$f' iflag=direct bs=256K status=none | cmp - '$REF/$f'"
	done
	"$UBTRFS_BIN" umount "$MNT" >/dev/null 2>&1 || bad "second umount"
else
	bad "remount: $(cat "$T/mount.out")"
fi

# The kernel reads the same bytes.
if mount -o loop,ro "$IMG" "$KMNT"; then
	for f in a b c d n; do
		check "kernel reads $f" cmp "$KMNT/$f" "$REF/$f"
	done
	umount "$KMNT"
else
	bad "kernel mount"
fi

ubt_finish
