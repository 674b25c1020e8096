#!/bin/bash
# test_rw_errors.sh — read-write mounts and their limits: a rw mount holds the image exclusively
# (a second ro or rw mount is refused while its daemon runs, and ro mounts keep a rw one out);
# `-o ro` refuses every change and leaves the image untouched; bad commit=/compress= values are
# usage errors; compress=/compress-force= mounts write data the kernel reads back; a full image
# reports ENOSPC to the writer ("No space left on device"), stays usable, and passes btrfs check.
set -u

source "$(dirname "$0")/../lib/common.sh"
ubt_skip_unless_root_fuse
ubt_need mkfs.btrfs btrfs losetup
ubt_need_ubtrfs

ubt_tmpdir rw-errors
IMG=$T/img
MNT=$T/mnt
MNT2=$T/mnt2
KMNT=$T/kmnt

ubt_teardown_pre() { ubt_kill $(daemons); } # the daemons of this test's mounts

daemons() { ubt_live_pids "ubtrfs mount .*$T/"; }
mounted() { grep -q " $1 " /proc/mounts; }
# refused NAME STATUS PATTERN -- CMD...: CMD exits STATUS saying PATTERN; nothing new mounted on $MNT2.
refused() {
	local name=$1 want=$2 pat=$3 rc n
	shift 4
	n=$(daemons | wc -l)
	"$@" >"$T/out" 2>&1
	rc=$?
	if [ "$rc" != "$want" ]; then
		bad "$name: exit $rc, wanted $want: $(cat "$T/out")"
	elif ! grep -Eq -- "$pat" "$T/out"; then
		bad "$name: message does not match '$pat': $(cat "$T/out")"
	elif [ "$(daemons | wc -l)" != "$n" ]; then
		bad "$name: a daemon was left behind"
	elif mounted "$MNT2"; then
		bad "$name: mounted anyway"
	else
		ok "$name ($(head -n1 "$T/out"))"
	fi
}

mkdir -p "$MNT" "$MNT2" "$KMNT"
truncate -s 512M "$IMG"
mkfs.btrfs -q -f "$IMG" >"$T/mkfs.out" 2>&1 || { cat "$T/mkfs.out"; echo "FAIL: mkfs.btrfs"; exit 1; }

# --- options ---
refused "compress=bogus" 2 "invalid value in mount option 'compress=bogus'" -- "$UBTRFS_BIN" mount -o compress=bogus "$IMG" "$MNT2"
refused "compress=zlib:10" 2 "compress=zlib:10" -- "$UBTRFS_BIN" mount -o compress=zlib:10 "$IMG" "$MNT2"
refused "compress=lzo:3" 2 "compress=lzo:3" -- "$UBTRFS_BIN" mount -o compress=lzo:3 "$IMG" "$MNT2"
refused "compress-force=zstd:99" 2 "compress-force=zstd:99" -- "$UBTRFS_BIN" mount -o compress-force=zstd:99 "$IMG" "$MNT2"
refused "commit=abc" 2 "commit=abc" -- "$UBTRFS_BIN" mount -o commit=abc "$IMG" "$MNT2"
refused "commit=-1" 2 "commit=-1" -- "$UBTRFS_BIN" mount -o commit=-1 "$IMG" "$MNT2"
"$UBTRFS_BIN" help mount | grep -q 'compress-force' && ok "help mount lists compress-force" || bad "help mount"

# --- a rw mount is exclusive ---
if ubt_fuse_mount "$IMG" "$MNT"; then
	echo data >"$MNT/f"
	refused "ro mount while a rw daemon holds the image" 1 "in use" -- "$UBTRFS_BIN" mount -o ro,lock_timeout=1 "$IMG" "$MNT2"
	refused "rw mount while a rw daemon holds the image" 1 "in use" -- "$UBTRFS_BIN" mount -o lock_timeout=1 "$IMG" "$MNT2"
	[ "$(cat "$MNT/f")" = data ] && ok "the first mount is undisturbed" || bad "first mount broken"
	ubt_fuse_umount "$MNT"
fi
# ... and ro mounts keep a rw one out.
if ubt_fuse_mount "$IMG" "$MNT" ro; then
	refused "rw mount while a ro daemon holds the image" 1 "in use" -- "$UBTRFS_BIN" mount -o lock_timeout=1 "$IMG" "$MNT2"
	ubt_fuse_umount "$MNT"
fi
# A rw mount right after `ubtrfs umount` of another one works (the lock is free).
ubt_fuse_mount "$IMG" "$MNT" && { [ "$(cat "$MNT/f")" = data ] && ok "rw remount after umount" || bad "data after remount"; ubt_fuse_umount "$MNT"; }

# --- -o ro changes nothing ---
sum=$(md5sum <"$IMG")
if ubt_fuse_mount "$IMG" "$MNT" ro; then
	grep -q " $MNT fuse.ubtrfs ro," /proc/mounts && ok "ro in /proc/mounts" || bad "ro mount not ro in /proc/mounts"
	for op in "echo x >'$MNT/new'" "echo x >>'$MNT/f'" "mkdir '$MNT/d'" "rm '$MNT/f'" "mv '$MNT/f' '$MNT/g'" \
		"touch '$MNT/f'" "chmod 600 '$MNT/f'" "ln -s f '$MNT/l'" "setfattr -n user.x -v y '$MNT/f'" "truncate -s 0 '$MNT/f'"; do
		if sh -c "$op" 2>"$T/op.err"; then
			bad "ro mount allowed: $op"
		elif ! grep -q "Read-only file system" "$T/op.err"; then
			bad "ro mount, $op: $(cat "$T/op.err")"
		fi
	done
	ok "ro mount refuses changes with EROFS"
	ubt_fuse_umount "$MNT"
	[ "$(md5sum <"$IMG")" = "$sum" ] && ok "the image is byte-for-byte unchanged after a ro mount" || bad "a ro mount changed the image"
fi

# --- compression ---
yes 'compressible text for the codec' | head -c 3000000 >"$T/text"
for opt in compress=zlib compress=lzo compress=zstd:3 compress-force=zstd; do
	ubt_fuse_mount "$IMG" "$MNT" "$opt" || continue
	name=${opt//[=:]/_}
	cp "$T/text" "$MNT/$name"
	cmp -s "$T/text" "$MNT/$name" || bad "$opt: read back through ubtrfs differs"
	ubt_fuse_umount "$MNT"
done
ubt_check_image "$IMG" "after compressed writes"
l=$(losetup -f --show "$IMG") && UBT_LOOPS+=("$l")
if mount -t btrfs -o ro "$l" "$KMNT"; then
	for opt in compress=zlib compress=lzo compress=zstd:3 compress-force=zstd; do
		name=${opt//[=:]/_}
		cmp -s "$T/text" "$KMNT/$name" && ok "$opt: the kernel reads the data back" || bad "$opt: kernel read differs"
	done
	umount "$KMNT"
else
	bad "kernel mount after compressed writes"
fi
losetup -d "$l"
# Whether the library compressed anything: the extents' compression field in the fs tree.
n=$(btrfs inspect-internal dump-tree -t 5 "$IMG" 2>/dev/null | grep -c "compression [123]")
[ "$n" -gt 0 ] && ok "compressed extents written ($n)" || bad "no compressed extent in the image after compress= mounts"

# --- ENOSPC ---
SMALL=$T/small
truncate -s 128M "$SMALL"
mkfs.btrfs -q -f "$SMALL" >"$T/mkfs.out" 2>&1 || { cat "$T/mkfs.out"; bad "mkfs of the small image"; }
if ubt_fuse_mount "$SMALL" "$MNT"; then
	echo keep >"$MNT/keep"
	dd if=/dev/urandom of="$MNT/fill" bs=1M count=400 status=none 2>"$T/dd.err"
	rc=$?
	[ "$rc" != 0 ] && grep -q "No space left on device" "$T/dd.err" && ok "dd onto a full image: $(head -n1 "$T/dd.err")" \
		|| bad "dd onto a full image: exit $rc, $(cat "$T/dd.err")"
	[ "$(cat "$MNT/keep")" = keep ] && ok "the mount still reads after ENOSPC" || bad "read after ENOSPC"
	size=$(stat -c %s "$MNT/fill" 2>/dev/null || echo 0)
	[ "$size" -gt 0 ] && [ "$size" -lt 134217728 ] && ok "the file holds what fit ($size bytes)" || bad "fill size $size"
	for i in $(seq 1 50); do
		mkdir "$MNT/d$i" 2>/dev/null || break
	done
	rm -f "$MNT/fill" && ok "rm of the big file on a full image" || bad "rm on a full image"
	sync "$MNT" # fsync of a directory: a commit, which releases the freed extents
	head -c 5000000 /dev/urandom >"$T/after"
	cp "$T/after" "$MNT/after" && cmp -s "$T/after" "$MNT/after" && ok "space is usable again after rm" || bad "write after freeing space"
	ubt_fuse_umount "$MNT"
	ubt_check_image "$SMALL" "after ENOSPC"
	l=$(losetup -f --show "$SMALL") && UBT_LOOPS+=("$l")
	if mount -t btrfs -o ro "$l" "$KMNT"; then
		[ "$(cat "$KMNT/keep")" = keep ] && cmp -s "$T/after" "$KMNT/after" && ok "the kernel reads the small image" || bad "kernel read of the small image"
		umount "$KMNT"
	else
		bad "kernel mount of the small image"
	fi
	losetup -d "$l"
fi

[ -z "$(daemons)" ] || bad "daemons left at the end: $(daemons)"
ubt_finish
