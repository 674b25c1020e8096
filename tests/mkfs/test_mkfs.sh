#!/bin/bash
# test_mkfs.sh — `ubtrfs mkfs` against the oracles: for every checksum and node size the image
# passes `btrfs check`, the kernel mounts it and takes files, a subvolume and many small files, and
# `btrfs check` passes again; features (block-group-tree, ^skinny-metadata, ^free-space-tree),
# profiles, labels, sizes, superblock mirrors, multi-level trees (UBT_MKFS_FANOUT), chunk sizes
# equal to mkfs.btrfs', and the refusals (existing filesystem without -f, bad options).
set -u

source "$(dirname "$0")/../lib/common.sh"
if [ "$(id -u)" != 0 ]; then
	echo "SKIP: needs root"
	exit 0
fi
for p in btrfs losetup mount; do
	command -v $p >/dev/null || { echo "SKIP: needs $p"; exit 0; }
done
ubt_need_ubtrfs

UBT_TEARDOWN_GENTLE=1 # a plain umount of the kernel's mounts first
ubt_tmpdir mkfs
MNT=$T/mnt
mkdir -p "$MNT"

mkfs() { "$UBTRFS_BIN" mkfs "$@" > "$T/mkfs.log" 2>&1; }
check() { # IMAGE WHAT (not common.sh's check: this one runs btrfs check)
	if btrfs check --readonly "$1" > "$T/check.log" 2>&1; then
		ok "btrfs check: $2"
	else
		bad "btrfs check: $2"
		tail -20 "$T/check.log"
	fi
}
super() { btrfs inspect-internal dump-super "$1" | awk -v k="$2" '$1 == k { print $2 }'; }

# Mount IMAGE with the kernel, write a few MB, many small files and a subvolume, unmount.
kernel_write() { # IMAGE WHAT
	local img=$1 what=$2 l
	ubt_attach "$img" || { bad "losetup: $what"; return; }
	l=$UBT_LOOP
	if ! mount -t btrfs "$l" "$MNT"; then
		bad "kernel mount: $what"
		dmesg | tail -5
		ubt_detach "$l"
		return
	fi
	head -c 3000000 /dev/urandom > "$MNT/big"
	mkdir "$MNT/small"
	for i in $(seq 1 400); do echo "file $i" > "$MNT/small/f$i"; done
	btrfs subvolume create "$MNT/sub" > /dev/null || bad "subvolume create: $what"
	cp "$MNT/big" "$MNT/sub/big"
	ln -s big "$MNT/sub/link"
	sync
	local sum1 sum2
	sum1=$(md5sum < "$MNT/big")
	sum2=$(md5sum < "$MNT/sub/big")
	[ "$sum1" = "$sum2" ] || bad "data differs: $what"
	[ "$(ls "$MNT/small" | wc -l)" = 400 ] || bad "small files: $what"
	umount "$MNT" || bad "umount: $what"
	ubt_detach "$l"
	ok "kernel mount + writes: $what"
}

IMG=$T/img

# --- every checksum x node size: check, kernel writes, check again ---
for csum in crc32c xxhash sha256 blake2; do
	for ns in 4096 16384 65536; do
		rm -f "$IMG"
		what="--csum $csum -n $ns"
		if ! mkfs -b 512M --csum "$csum" -n "$ns" "$IMG"; then
			bad "mkfs $what"
			cat "$T/mkfs.log"
			continue
		fi
		check "$IMG" "fresh, $what"
		kernel_write "$IMG" "$what"
		check "$IMG" "after kernel writes, $what"
	done
done
# The names btrfs-progs prints for them.
rm -f "$IMG"
mkfs -q -b 512M --csum xxhash "$IMG" &&
	[ "$(btrfs inspect-internal dump-super "$IMG" | awk '$1 == "csum_type" { print $3 }')" = "(xxhash64)" ] &&
	ok "csum type xxhash64 in the superblock" || bad "csum type xxhash64"

# --- features and profiles ---
for opts in "-O block-group-tree" "-O ^skinny-metadata" "-O ^free-space-tree" "-O ^no-holes,^extref" \
	"-m single" "-d dup" "-n 4096 -O bgt,^skinny-metadata"; do
	rm -f "$IMG"
	# shellcheck disable=SC2086
	if ! mkfs -q -b 512M $opts "$IMG"; then
		bad "mkfs $opts"
		cat "$T/mkfs.log"
		continue
	fi
	check "$IMG" "fresh, $opts"
	kernel_write "$IMG" "$opts"
	check "$IMG" "after kernel writes, $opts"
done
rm -f "$IMG"
mkfs -q -b 512M -O block-group-tree "$IMG"
[ "$(super "$IMG" compat_ro_flags)" = 0xb ] && ok "block-group-tree: compat_ro 0xb" ||
	bad "block-group-tree compat_ro $(super "$IMG" compat_ro_flags)"
btrfs inspect-internal dump-tree -t 11 "$IMG" | grep -q "BLOCK_GROUP_ITEM" && ok "block group items in tree 11" ||
	bad "no block group items in tree 11"
btrfs inspect-internal dump-tree -t 2 "$IMG" | grep -q "BLOCK_GROUP_ITEM" && bad "block group items in the extent tree" ||
	ok "no block group items in the extent tree"
rm -f "$IMG"
mkfs -q -b 512M -O ^free-space-tree "$IMG"
[ "$(super "$IMG" compat_ro_flags)" = 0x0 ] && [ "$(super "$IMG" cache_generation)" = 18446744073709551615 ] &&
	ok "^free-space-tree: no compat_ro flags, no space cache" || bad "^free-space-tree superblock"

# --- multi-level trees (test hook): nodes above leaves in every tree ---
for opts in "" "-n 4096 -O bgt" "-O ^skinny-metadata"; do
	rm -f "$IMG"
	# shellcheck disable=SC2086
	UBT_MKFS_FANOUT=3 "$UBTRFS_BIN" mkfs -q -b 512M $opts "$IMG" || { bad "mkfs fanout 3 $opts"; continue; }
	[ "$(super "$IMG" root_level)" -ge 1 ] && [ "$(super "$IMG" chunk_root_level)" -ge 1 ] &&
		ok "fanout 3 $opts: root and chunk trees have nodes" || bad "fanout 3 $opts: levels"
	check "$IMG" "fanout 3 $opts"
done
kernel_write "$IMG" "fanout 3 -O ^skinny-metadata"
check "$IMG" "fanout 3, after kernel writes"

# --- label, uuid ---
rm -f "$IMG"
mkfs -b 512M -L "my label" -U 01234567-89ab-cdef-0123-456789abcdef "$IMG" || bad "mkfs -L -U"
[ "$(btrfs inspect-internal dump-super "$IMG" | sed -n 's/^label\t*//p')" = "my label" ] &&
	ok "label in dump-super" || bad "label in dump-super"
[ "$(btrfs filesystem label "$IMG")" = "my label" ] && ok "btrfs filesystem label" || bad "btrfs filesystem label"
[ "$(super "$IMG" fsid)" = 01234567-89ab-cdef-0123-456789abcdef ] && ok "-U sets the fsid" || bad "-U fsid"
grep -q "my label" "$T/mkfs.log" && ok "summary names the label" || bad "summary"
check "$IMG" "-L -U"
mkfs -q -b 512M -f -L "$(printf 'x%.0s' $(seq 1 256))" "$IMG"
[ $? = 2 ] && grep -q "too long" "$T/mkfs.log" && ok "256-byte label refused" || bad "long label"

# --- sizes ---
rm -f "$IMG"
mkfs -q -b 300M "$IMG" && [ "$(stat -c %s "$IMG")" = 314572800 ] && [ "$(super "$IMG" total_bytes)" = 314572800 ] &&
	ok "-b 300M creates a 300 MiB image" || bad "-b 300M"
check "$IMG" "-b 300M"
truncate -s 200M "$IMG"
mkfs -q -f -b 256M "$IMG" && [ "$(stat -c %s "$IMG")" = 268435456 ] && ok "-b extends a smaller image" ||
	bad "-b extend"
rm -f "$IMG"
truncate -s 1G "$IMG"
mkfs -q -b 400M "$IMG" && [ "$(super "$IMG" total_bytes)" = 419430400 ] && [ "$(stat -c %s "$IMG")" = 1073741824 ] &&
	ok "-b 400M on a 1 GiB image uses 400 MiB" || bad "-b smaller than the image"
check "$IMG" "-b 400M of 1G"
rm -f "$IMG"
truncate -s 768M "$IMG"
mkfs -q "$IMG" && [ "$(super "$IMG" total_bytes)" = 805306368 ] && ok "default size is the whole file" ||
	bad "whole-file size"
rm -f "$IMG"
mkfs -q -b 300G "$IMG" || bad "mkfs 300G"
n=$(btrfs inspect-internal dump-super -a "$IMG" | grep -c '\[match\]')
# three copies, each with a matching checksum, magic and fsid line
[ "$(btrfs inspect-internal dump-super -a "$IMG" | grep -c '^superblock: bytenr=')" = 3 ] && [ "$n" -ge 6 ] &&
	ok "300 GiB image: three superblock copies with matching checksums" || bad "superblock mirrors ($n)"
[ "$(du -k "$IMG" | cut -f1)" -lt 20000 ] && ok "sparse image stays sparse" || bad "image not sparse"
check "$IMG" "300G"
rm -f "$IMG"
mkfs -q -b 64M "$IMG"
[ $? = 1 ] && grep -q "too small" "$T/mkfs.log" && ok "64 MiB refused as too small" || bad "too small"
mkfs -q "$T/does-not-exist"
[ $? = 1 ] && grep -q "No such file" "$T/mkfs.log" && ok "missing image without -b refused" || bad "missing image"

# --- a block device (loop): whole device, in-use refusal, -b larger than the device ---
truncate -s 512M "$T/blk"
ubt_attach "$T/blk"; l=$UBT_LOOP
if mkfs -q "$l" && [ "$(super "$l" total_bytes)" = 536870912 ]; then
	ok "mkfs on a block device uses the whole device"
else
	bad "mkfs on a block device"
	cat "$T/mkfs.log"
fi
check "$l" "block device"
if mount -t btrfs "$l" "$MNT"; then
	head -c 2000000 /dev/urandom > "$MNT/f"
	mkfs -q -f "$l"
	[ $? = 1 ] && grep -q "in use" "$T/mkfs.log" && ok "mounted block device refused even with -f" ||
		bad "mounted block device"
	umount "$MNT"
	check "$l" "block device after kernel writes"
else
	bad "kernel mount of the block device"
fi
mkfs -q -f -b 1G "$l"
[ $? = 1 ] && grep -q "fewer than" "$T/mkfs.log" && ok "-b beyond the block device refused" || bad "-b beyond the device"
ubt_detach "$l"
rm -f "$T/blk"

# --- chunk layout equal to mkfs.btrfs' (types and sizes, ignoring addresses) ---
if command -v mkfs.btrfs >/dev/null; then
	for size in 512M 10G; do
		rm -f "$IMG" "$T/ref"
		truncate -s $size "$T/ref"
		mkfs.btrfs -q -f "$T/ref" > /dev/null 2>&1
		mkfs -q -b $size "$IMG"
		chunks() { btrfs inspect-internal dump-tree -t 3 "$1" | awk '/length .* type/ { print $2, $8 }' | sort; }
		if [ "$(chunks "$T/ref")" = "$(chunks "$IMG")" ]; then
			ok "$size: chunk types and sizes as mkfs.btrfs"
		else
			bad "$size: chunks differ from mkfs.btrfs"
			diff <(chunks "$T/ref") <(chunks "$IMG")
		fi
		keys() { btrfs inspect-internal dump-tree -t 1 "$1" | awk '/item [0-9]+ key/ { print $4, $5 }' | sort; }
		[ "$(keys "$T/ref")" = "$(keys "$IMG")" ] && ok "$size: root tree items as mkfs.btrfs" ||
			{ bad "$size: root tree items differ"; diff <(keys "$T/ref") <(keys "$IMG"); }
		[ "$(super "$T/ref" bytes_used)" = "$(super "$IMG" bytes_used)" ] &&
			ok "$size: bytes_used as mkfs.btrfs" || bad "$size: bytes_used differs"
	done
	rm -f "$T/ref"
fi

# --- refusals ---
rm -f "$IMG"
mkfs -q -b 512M "$IMG"
mkfs -q "$IMG"
[ $? = 1 ] && grep -q "existing filesystem" "$T/mkfs.log" && grep -q -- "-f" "$T/mkfs.log" &&
	ok "existing btrfs refused without -f" || bad "existing btrfs not refused"
mkfs -q -f "$IMG" && ok "-f overwrites" || bad "-f"
check "$IMG" "-f over an old filesystem"
dd if=/dev/zero of="$IMG" bs=1M count=2 conv=notrunc status=none
printf '\x53\xef' | dd of="$IMG" bs=1 seek=$((0x438)) conv=notrunc status=none
mkfs -q "$IMG"
[ $? = 1 ] && grep -q "ext2/ext3/ext4" "$T/mkfs.log" && ok "ext4 signature refused without -f" || bad "ext4 signature"
mkfs -q -f "$IMG" || bad "mkfs -f over ext4"
ubt_attach "$IMG"; l=$UBT_LOOP
mount -t btrfs "$l" "$MNT" || bad "mount before the in-use test"
mkfs -q -f "$IMG"
[ $? = 1 ] && grep -q "in use" "$T/mkfs.log" && ok "mounted image refused even with -f" || bad "mounted image"
umount "$MNT" 2>/dev/null
ubt_detach "$l"

expect_usage() { # WHAT GREP ARGS...
	local what=$1 pat=$2 rc
	shift 2
	"$UBTRFS_BIN" mkfs "$@" > "$T/mkfs.log" 2>&1
	rc=$?
	if [ $rc = 2 ] || [ $rc = 1 ]; then
		grep -q -- "$pat" "$T/mkfs.log" && ok "$what: exit $rc, message" ||
			{ bad "$what: message"; cat "$T/mkfs.log"; }
	else
		bad "$what: exit $rc"
	fi
}
expect_usage "unknown option" "unknown option" --bogus "$IMG"
expect_usage "nodesize 3000" "invalid nodesize" -f -n 3000 "$IMG"
expect_usage "nodesize 131072" "invalid nodesize" -f -n 128K "$IMG"
expect_usage "sectorsize 8192" "sectorsize 8192 is not supported" -f -s 8192 "$IMG"
expect_usage "unknown csum" "unknown checksum" -f --csum md5 "$IMG"
expect_usage "unknown feature" "unrecognized filesystem feature" -f -O frobnicate "$IMG"
expect_usage "unsupported feature" "not supported" -f -O raid56 "$IMG"
expect_usage "bad uuid" "invalid UUID" -f -U not-a-uuid "$IMG"
expect_usage "no device" "no device" -f

# --- --rootdir: needs the library's write API; without it, a clear refusal ---
SRC=$T/src
mkdir -p "$SRC/d/e" "$SRC/empty"
echo hello > "$SRC/hello"
head -c 3000000 /dev/urandom > "$SRC/d/big"
dd if=/dev/urandom of="$SRC/d/sparse" bs=4096 seek=100 count=2 status=none
truncate -s 2M "$SRC/d/tailhole"
ln -s hello "$SRC/link"
ln "$SRC/hello" "$SRC/d/hard"
mkfifo "$SRC/fifo"
for i in $(seq 1 300); do echo "$i" > "$SRC/d/e/f$i"; done
setfattr -n user.k -v v "$SRC/hello" 2>/dev/null
chmod 4750 "$SRC/d"
chown 1000:1000 "$SRC/d/e"
touch -d 2001-01-01 "$SRC/d/big"
"$UBTRFS_BIN" mkfs -f --rootdir "$SRC" "$IMG" > "$T/mkfs.log" 2>&1
rc=$?
if [ $rc = 1 ] && grep -q "not supported yet" "$T/mkfs.log"; then
	ok "--rootdir refused clearly (this build has no read-write library API)"
elif [ $rc = 0 ]; then
	check "$IMG" "--rootdir"
	ubt_attach "$IMG"; l=$UBT_LOOP
	if mount -t btrfs -o ro "$l" "$MNT"; then
		diff -r --no-dereference "$SRC" "$MNT" > "$T/diff.log" 2>&1
		grep -v "is a fifo while" "$T/diff.log" | grep -q . && { bad "--rootdir content"; head "$T/diff.log"; } ||
			ok "--rootdir content as the source"
		# Files: mode, owner, size, links, mtime; directories: mode, owner.
		lst() { (cd "$1" && find . -printf '%p %m %U %G %y ' \( -type d -printf '\n' -o -printf '%s %n %T@\n' \) | sort); }
		[ "$(lst "$SRC")" = "$(lst "$MNT")" ] && ok "--rootdir modes, owners, sizes, links, times" ||
			{ bad "--rootdir metadata"; diff <(lst "$SRC") <(lst "$MNT") | head; }
		[ "$(getfattr --only-values -n user.k "$MNT/hello" 2>/dev/null)" = v ] && ok "--rootdir xattr" ||
			bad "--rootdir xattr"
		umount "$MNT"
	else
		bad "kernel mount of a --rootdir image"
	fi
	ubt_detach "$l"
	kernel_write "$IMG" "--rootdir image"
	check "$IMG" "--rootdir image after kernel writes"
else
	bad "--rootdir: exit $rc"
	cat "$T/mkfs.log"
fi
mkfs -q -f --rootdir "$T/nonexistent" "$IMG"
[ $? != 0 ] && grep -q "nonexistent" "$T/mkfs.log" && ok "--rootdir of a missing directory refused" ||
	bad "--rootdir missing directory"
mkfs -q -f "$IMG"
check "$IMG" "untouched by the refused commands"
"$UBTRFS_BIN" mkfs -V | grep -q "ubtrfs mkfs, version" && ok "-V" || bad "-V"
"$UBTRFS_BIN" mkfs -O list-all | grep -q "block-group-tree" && ok "-O list-all" || bad "-O list-all"
"$UBTRFS_BIN" help mkfs | grep -q -- "--csum" && ok "help mkfs" || bad "help mkfs"

if [ $fail = 0 ]; then
	echo "PASS: test_mkfs"
else
	echo "FAIL: test_mkfs"
fi
exit $fail
