#!/bin/bash
# test_rw_workload.sh — a read-write `ubtrfs mount` of a fresh mkfs.btrfs image runs a shell
# workload (mkdir -p, cp -a of a generated tree and of /usr/share/doc, appends, dd, truncate,
# chmod/chown/touch with ns, links, mv incl. -T and RENAME_EXCHANGE/NOREPLACE, xattrs, O_TRUNC,
# O_EXCL, unlink while open, setgid directories, umask, rm -rf); then `ubtrfs umount`,
# `btrfs check --readonly`, and the kernel's btrfs must show the same manifest (atime and ctime
# excluded). The other direction too: the kernel writes, ubtrfs reads and changes, the kernel
# reads back.
set -u

source "$(dirname "$0")/../lib/common.sh"
ubt_skip_unless_root_fuse
ubt_need mkfs.btrfs btrfs losetup setfattr getfattr python3
ubt_need_ubtrfs
MANIFEST=${UBT_TOOLS_DIR:-${UBT_BUILD_DIR:-.}/tests}/manifest
[ -x "$MANIFEST" ] || { echo "FAIL: no manifest tool at $MANIFEST"; exit 1; }

ubt_tmpdir rw-workload
chmod 0755 "$T" # other users take part in the workload
IMG=$T/img
MNT=$T/mnt
KMNT=$T/kmnt
SRC=$T/src

ubt_teardown_pre() { ubt_kill $(daemons); } # the daemons of this test's mounts

# Live ubtrfs daemons serving a mountpoint of this test (zombies ignored).
daemons() { ubt_live_pids "ubtrfs mount .*$T/"; }
fuse_umount() {
	ubt_fuse_umount "$1"
	[ -z "$(daemons)" ] || bad "daemon still running after ubtrfs umount: $(daemons)"
}
kernel_mount() { # IMG DIR OPTS
	ubt_attach "$1" || { bad "losetup $1"; return 1; }
	mount -t btrfs -o "$3" "$UBT_LOOP" "$2" || { bad "kernel mount -o $3 of $1"; return 1; }
}
kernel_umount() {
	local l
	l=$(awk -v d="$1" '$2 == d { print $1 }' /proc/mounts)
	umount "$1" || bad "kernel umount $1"
	[ -n "$l" ] && losetup -d "$l" 2>/dev/null
}
check_image() { ubt_check_image "$IMG" "$1" 30; } # WHAT
manifest() { # DIR OUT
	"$MANIFEST" dir "$1" >"$2" 2>"$2.err" || bad "manifest of $1: $(cat "$2.err")"
}
# A copy made on another filesystem differs in what btrfs defines its own way: a directory's
# size and link count, and the root's own line. Leave those out when comparing with the source.
copy_manifest() { # DIR OUT
	manifest "$1" "$2.raw"
	awk '$1 != "." { if ($2 == "dir") { $6 = "-"; $8 = "-" } print }' "$2.raw" >"$2"
}
same_manifest() { # A B WHAT
	if diff -u "$1" "$2" >"$T/diff.out"; then
		ok "$3 ($(wc -l <"$1") entries)"
	else
		bad "$3:"; head -n 40 "$T/diff.out"
	fi
}
# pyrun 'code' ARGS...: a small python3 program; sys.argv[1:] are ARGS.
pyrun() { local code=$1; shift; python3 -c "$code" "$@"; }
RENAMEAT2='
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
flags = {"exchange": 2, "noreplace": 1}[sys.argv[1]]
r = libc.renameat2(-100, sys.argv[2].encode(), -100, sys.argv[3].encode(), flags)
if r:
    e = ctypes.get_errno()
    print(os.strerror(e)); sys.exit(1)
'

# --- a generated source tree with every kind of inode ---
mkdir -p "$SRC/d1/d2/d3" "$SRC/empty" "$SRC/modes" "$MNT" "$KMNT"
for s in 0 1 100 4095 4096 4097 65536 200000 1048576 3000000; do
	head -c "$s" /dev/urandom >"$SRC/d1/rand-$s"
done
yes 'a compressible line' | head -c 500000 >"$SRC/d1/d2/text"
dd if=/dev/urandom of="$SRC/d1/d2/sparse" bs=4096 seek=300 count=3 status=none
truncate -s 10M "$SRC/d1/d2/hole-only"
ln -s d1/rand-1 "$SRC/rel-link"
ln -s "/abs/$(printf 'x%.0s' $(seq 1 300))" "$SRC/d1/long-link"
ln "$SRC/d1/rand-100" "$SRC/d1/d2/d3/hard-100"
mkfifo "$SRC/fifo"
mknod "$SRC/chardev" c 1 3
mknod "$SRC/blockdev" b 7 200
for m in 0600 0644 0755 0700 1777 2755 4755 0000; do
	echo "$m" >"$SRC/modes/f$m"
	chmod "$m" "$SRC/modes/f$m"
done
chown 1234:5678 "$SRC/modes/f0644"
setfattr -n user.color -v blue "$SRC/d1/rand-0"
setfattr -n user.big -v "$(head -c 3000 /dev/zero | tr '\0' v)" "$SRC/d1/rand-1"
touch -h -d '2001-02-03 04:05:06.123456789' "$SRC/rel-link"
touch -d '1999-12-31 23:59:59.999999999' "$SRC/d1/d2"

truncate -s 512M "$IMG"
mkfs.btrfs -q -f "$IMG" >"$T/mkfs.out" 2>&1 || { cat "$T/mkfs.out"; echo "FAIL: mkfs.btrfs"; exit 1; }

# === ubtrfs writes (allow_other: other users take part below) ===
ubt_fuse_mount "$IMG" "$MNT" allow_other || { echo "FAILED"; exit 1; }
grep -q " $MNT fuse.ubtrfs rw," /proc/mounts && ok "mounted read-write by default" || bad "not rw in /proc/mounts: $(grep " $MNT " /proc/mounts)"
[ "$(daemons | wc -l)" = 1 ] || bad "expected one daemon, have: $(daemons)"

mkdir -p "$MNT/a/b/c/d/e" && [ -d "$MNT/a/b/c/d/e" ] && ok "mkdir -p" || bad "mkdir -p"
cp -a "$SRC" "$MNT/copy" 2>"$T/cp.err" && ok "cp -a of the generated tree" || { bad "cp -a"; head "$T/cp.err"; }
copy_manifest "$SRC" "$T/m.src"
copy_manifest "$MNT/copy" "$T/m.copy"
same_manifest "$T/m.src" "$T/m.copy" "cp -a copy matches its source"
DOCS=$(find /usr/share/doc -mindepth 1 -maxdepth 1 -type d 2>/dev/null | sort | head -n 60)
if [ -n "$DOCS" ]; then
	mkdir "$MNT/doc"
	# shellcheck disable=SC2086
	cp -a $DOCS "$MNT/doc/" 2>"$T/cpdoc.err" && ok "cp -a of $(echo "$DOCS" | wc -l) /usr/share/doc dirs" || { bad "cp -a docs"; head "$T/cpdoc.err"; }
	mkdir "$T/docref"
	# shellcheck disable=SC2086
	cp -a $DOCS "$T/docref/"
	copy_manifest "$T/docref" "$T/m.docref"
	copy_manifest "$MNT/doc" "$T/m.doc"
	same_manifest "$T/m.docref" "$T/m.doc" "/usr/share/doc copy matches"
fi

# data: echo, appends, dd at offsets, truncate up and down, O_TRUNC
echo "first" >"$MNT/a/f"
echo "second" >>"$MNT/a/f"
[ "$(cat "$MNT/a/f")" = "$(printf 'first\nsecond')" ] && ok "echo and append" || bad "append: $(cat "$MNT/a/f")"
head -c 1000000 /dev/urandom >"$T/blob"
cp "$T/blob" "$MNT/a/blob"
dd if=/dev/urandom of="$T/patch" bs=1 count=5000 status=none
dd if="$T/patch" of="$MNT/a/blob" bs=1 seek=123457 conv=notrunc status=none
dd if="$T/patch" of="$T/blob" bs=1 seek=123457 conv=notrunc status=none
dd if=/dev/urandom of="$MNT/a/dd" bs=64k count=40 status=none
dd if="$T/patch" of="$MNT/a/blob" bs=4096 seek=300 conv=notrunc status=none
dd if="$T/patch" of="$T/blob" bs=4096 seek=300 conv=notrunc status=none
cmp -s "$T/blob" "$MNT/a/blob" && ok "dd conv=notrunc at offsets, inside and past EOF" || bad "dd overwrite content"
truncate -s 100000 "$MNT/a/blob"; truncate -s 100000 "$T/blob"
truncate -s 2000000 "$MNT/a/blob"; truncate -s 2000000 "$T/blob"
cmp -s "$T/blob" "$MNT/a/blob" && ok "truncate down and up (zeros past the old end)" || bad "truncate content"
[ "$(stat -c %s "$MNT/a/blob")" = 2000000 ] || bad "size after truncate: $(stat -c %s "$MNT/a/blob")"
echo "short" >"$MNT/a/dd"
[ "$(cat "$MNT/a/dd")" = short ] && [ "$(stat -c %s "$MNT/a/dd")" = 6 ] && ok "O_TRUNC rewrite" || bad "O_TRUNC: size $(stat -c %s "$MNT/a/dd")"
: >"$MNT/a/dd" && [ "$(stat -c %s "$MNT/a/dd")" = 0 ] && ok "truncate to zero with :>" || bad ":> did not truncate"
head -c 300000 /dev/urandom | tee "$T/app" >/dev/null
for i in 1 2 3; do cat "$T/app" >>"$MNT/a/appended"; done
[ "$(stat -c %s "$MNT/a/appended")" = 900000 ] && cmp -s <(cat "$T/app" "$T/app" "$T/app") "$MNT/a/appended" \
	&& ok "O_APPEND writes" || bad "O_APPEND: size $(stat -c %s "$MNT/a/appended")"

# attributes
chmod 4751 "$MNT/a/f" && [ "$(stat -c %a "$MNT/a/f")" = 4751 ] && ok "chmod 4751" || bad "chmod: $(stat -c %a "$MNT/a/f")"
chown 4321:8765 "$MNT/a/f" && [ "$(stat -c %u:%g "$MNT/a/f")" = 4321:8765 ] && ok "chown" || bad "chown: $(stat -c %u:%g "$MNT/a/f")"
[ "$(stat -c %a "$MNT/a/f")" = 751 ] && ok "chown by root cleared the set-uid bit" || bad "mode after chown: $(stat -c %a "$MNT/a/f")"
chown -h 77:88 "$MNT/copy/rel-link" && [ "$(stat -c %u:%g "$MNT/copy/rel-link")" = 77:88 ] && ok "chown -h on a symlink" || bad "chown -h"
touch -d @1275898150.987654321 "$MNT/a/f"
[ "$(stat -c %.9Y "$MNT/a/f")" = 1275898150.987654321 ] && ok "touch -d with nanoseconds" || bad "touch -d: $(stat -c %.9Y "$MNT/a/f")"
mtime=$(stat -c %.9Y "$MNT/a/blob")
touch -a -d @1293840000.5 "$MNT/a/blob"
[ "$(stat -c %.9X:%.9Y "$MNT/a/blob")" = "1293840000.500000000:$mtime" ] && ok "touch -a sets atime only" || bad "touch -a: $(stat -c %.9X:%.9Y "$MNT/a/blob"), mtime was $mtime"
touch -h -d @1046660583.000000333 "$MNT/copy/rel-link"
[ "$(stat -c %.9Y "$MNT/copy/rel-link")" = 1046660583.000000333 ] && ok "touch -h on a symlink" || bad "touch -h: $(stat -c %.9Y "$MNT/copy/rel-link")"
before=$(stat -c %Y "$MNT/a/blob")
sleep 1.1
touch "$MNT/a/blob"
[ "$(stat -c %Y "$MNT/a/blob")" -gt "$before" ] && ok "touch (UTIME_NOW)" || bad "touch now"
( umask 027; : >"$MNT/a/masked"; mkdir "$MNT/a/maskeddir" )
[ "$(stat -c %a "$MNT/a/masked"):$(stat -c %a "$MNT/a/maskeddir")" = 640:750 ] && ok "umask applied" || bad "umask: $(stat -c %a "$MNT/a/masked") $(stat -c %a "$MNT/a/maskeddir")"
mkdir "$MNT/sgid" && chown 0:4242 "$MNT/sgid" && chmod 2775 "$MNT/sgid"
mkdir "$MNT/sgid/sub"; : >"$MNT/sgid/file"
[ "$(stat -c %g:%a "$MNT/sgid/sub")" = 4242:2755 ] && ok "setgid dir: subdir inherits gid and S_ISGID" || bad "sgid subdir: $(stat -c %g:%a "$MNT/sgid/sub")"
[ "$(stat -c %g "$MNT/sgid/file")" = 4242 ] && ok "setgid dir: file inherits gid" || bad "sgid file: $(stat -c %g "$MNT/sgid/file")"
if command -v setpriv >/dev/null; then
	setpriv --reuid 1000 --regid 1000 --clear-groups sh -c ": >'$MNT/a/denied'" 2>/dev/null \
		&& bad "unprivileged user created a file in a 0755 root directory" || ok "permissions checked (default_permissions)"
	chmod 1777 "$MNT/a/b"
	setpriv --reuid 1000 --regid 1001 --clear-groups sh -c "echo mine >'$MNT/a/b/user-file'" \
		&& [ "$(stat -c %u:%g "$MNT/a/b/user-file")" = 1000:1001 ] && ok "new inode owned by the caller" \
		|| bad "caller ownership: $(stat -c %u:%g "$MNT/a/b/user-file" 2>&1)"
fi

# names: links, renames, exchange, noreplace
ln "$MNT/a/f" "$MNT/a/b/f-hard" && [ "$(stat -c %h "$MNT/a/f")" = 2 ] && ok "ln (nlink 2)" || bad "ln: nlink $(stat -c %h "$MNT/a/f")"
ln -s ../f "$MNT/a/b/f-sym" && [ "$(readlink "$MNT/a/b/f-sym")" = ../f ] && [ "$(cat "$MNT/a/b/f-sym")" = "$(cat "$MNT/a/f")" ] && ok "ln -s" || bad "ln -s"
mv "$MNT/a/blob" "$MNT/a/b/c/blob-moved" && [ ! -e "$MNT/a/blob" ] && cmp -s "$T/blob" "$MNT/a/b/c/blob-moved" && ok "mv across directories" || bad "mv across"
echo old >"$MNT/a/victim"; echo new >"$MNT/a/newer"
mv "$MNT/a/newer" "$MNT/a/victim" && [ "$(cat "$MNT/a/victim")" = new ] && [ ! -e "$MNT/a/newer" ] && ok "mv over an existing file" || bad "mv replace"
mkdir -p "$MNT/dirA/inner" "$MNT/dirB"; echo in >"$MNT/dirA/inner/x"
mv -T "$MNT/dirA" "$MNT/dirB" && [ "$(cat "$MNT/dirB/inner/x")" = in ] && [ ! -e "$MNT/dirA" ] && ok "mv -T over an empty directory" || bad "mv -T"
mkdir -p "$MNT/dirC/full"
mv -T "$MNT/dirB" "$MNT/dirC" 2>"$T/mv.err" && bad "mv -T over a non-empty directory succeeded" || { grep -qi "not empty\|exists" "$T/mv.err" && ok "mv -T over a non-empty directory refused"  || bad "mv -T message: $(cat "$T/mv.err")"; }
mv "$MNT/a/b/c/d" "$MNT/a/d-renamed" && [ -d "$MNT/a/d-renamed/e" ] && ok "rename a directory" || bad "dir rename"
mv "$MNT/a/d-renamed" "$MNT/a/d-renamed/e/x" 2>/dev/null && bad "moved a directory into itself" || ok "directory into itself refused"
echo one >"$MNT/x1"; mkdir "$MNT/x2"; echo two >"$MNT/x2/in"
if out=$(pyrun "$RENAMEAT2" exchange "$MNT/x1" "$MNT/x2"); then
	[ -d "$MNT/x1" ] && [ "$(cat "$MNT/x1/in")" = two ] && [ "$(cat "$MNT/x2")" = one ] && ok "RENAME_EXCHANGE of a file and a directory" || bad "exchange result"
else
	bad "renameat2 RENAME_EXCHANGE: $out"
fi
out=$(pyrun "$RENAMEAT2" exchange "$MNT/x1" "$MNT/nonexistent")
[ "$out" = "No such file or directory" ] && ok "RENAME_EXCHANGE with a missing target: ENOENT" || bad "exchange missing: $out"
out=$(pyrun "$RENAMEAT2" noreplace "$MNT/x2" "$MNT/a/f")
[ "$out" = "File exists" ] && [ "$(cat "$MNT/x2")" = one ] && ok "RENAME_NOREPLACE onto an existing name: EEXIST" || bad "noreplace: $out"
pyrun "$RENAMEAT2" noreplace "$MNT/x2" "$MNT/x3" && [ "$(cat "$MNT/x3")" = one ] && ok "RENAME_NOREPLACE to a free name" || bad "noreplace rename"

# open flags and unlinked-but-open files
out=$(pyrun 'import os,sys
try:
    os.open(sys.argv[1], os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    print("created")
except FileExistsError:
    print("EEXIST")' "$MNT/a/f")
[ "$out" = EEXIST ] && ok "O_CREAT|O_EXCL on an existing name: EEXIST" || bad "O_EXCL: $out"
out=$(pyrun 'import os,sys
p = sys.argv[1]
fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o600)
os.write(fd, b"x" * 10000)
os.unlink(p)
assert not os.path.exists(p)
os.write(fd, b"y" * 5000)
os.fsync(fd)
os.lseek(fd, 0, 0)
data = os.read(fd, 20000)
st = os.fstat(fd)
os.ftruncate(fd, 100)
st2 = os.fstat(fd)
os.close(fd)
print(len(data), st.st_nlink, st2.st_size)' "$MNT/a/ghost")
[ "$out" = "15000 0 100" ] && ok "unlinked file stays usable while open (write, fsync, ftruncate)" || bad "unlinked open file: $out"
pyrun 'import os,sys; fd = os.open(sys.argv[1], os.O_WRONLY|os.O_CREAT|os.O_SYNC, 0o644); os.write(fd, b"sync"); os.fdatasync(fd); os.close(fd)' "$MNT/a/synced" \
	&& [ "$(cat "$MNT/a/synced")" = sync ] && ok "O_SYNC write, fdatasync" || bad "O_SYNC"
sync "$MNT" && ok "fsync of the mount's root directory (sync DIR)" || bad "sync DIR"
mkfifo "$MNT/a/fifo" && mknod "$MNT/a/null" c 1 3 && [ -p "$MNT/a/fifo" ] && [ -c "$MNT/a/null" ] && ok "mkfifo, mknod" || bad "mknod"
[ "$(stat -c %t:%T "$MNT/a/null")" = 1:3 ] || bad "rdev: $(stat -c %t:%T "$MNT/a/null")"

# xattrs
setfattr -n user.k1 -v v1 "$MNT/a/f" && setfattr -n user.k2 -v "$(head -c 2000 /dev/zero | tr '\0' z)" "$MNT/a/f" \
	&& [ "$(getfattr --absolute-names --only-values -n user.k1 "$MNT/a/f")" = v1 ] && ok "setfattr/getfattr" || bad "setfattr"
setfattr -n user.k1 -v v1b "$MNT/a/f" && [ "$(getfattr --absolute-names --only-values -n user.k1 "$MNT/a/f")" = v1b ] && ok "replace an xattr" || bad "xattr replace"
setfattr -x user.k2 "$MNT/a/f" && ! getfattr --absolute-names -n user.k2 "$MNT/a/f" >/dev/null 2>&1 && ok "setfattr -x" || bad "removexattr"
setfattr -x user.nope "$MNT/a/f" 2>"$T/x.err" && bad "removing a missing xattr succeeded" || { grep -q "No such attribute" "$T/x.err" && ok "remove missing xattr: ENODATA" || bad "removexattr message: $(cat "$T/x.err")"; }
out=$(pyrun 'import os,sys
p = sys.argv[1]
r = []
try:
    os.setxattr(p, "user.k1", b"z", os.XATTR_CREATE); r.append("created")
except FileExistsError:
    r.append("EEXIST")
try:
    os.setxattr(p, "user.absent", b"z", os.XATTR_REPLACE); r.append("replaced")
except OSError as e:
    r.append(os.strerror(e.errno))
print(",".join(r))' "$MNT/a/f")
[ "$out" = "EEXIST,No data available" ] && ok "XATTR_CREATE / XATTR_REPLACE" || bad "xattr flags: $out"
setfattr -n user.dirattr -v d "$MNT/a/b" && setfattr -h -n trusted.linkattr -v l "$MNT/a/b/f-sym" && ok "xattrs on a directory and a symlink" || bad "dir/symlink xattrs"

# POSIX ACLs (plain xattrs to the daemon, which keeps the mode bits in step as btrfs does)
if command -v setfacl >/dev/null; then
	echo acl >"$MNT/a/acl"; chmod 0600 "$MNT/a/acl"
	setfacl -m g::r-x,o::r-- "$MNT/a/acl" && [ "$(stat -c %a "$MNT/a/acl")" = 654 ] \
		&& ! getfattr --absolute-names -n system.posix_acl_access "$MNT/a/acl" >/dev/null 2>&1 \
		&& ok "a mode-equivalent ACL sets the mode bits and is not stored" || bad "trivial ACL: mode $(stat -c %a "$MNT/a/acl")"
	setfacl -m u:1234:rw- "$MNT/a/acl" && [ "$(stat -c %a "$MNT/a/acl")" = 674 ] \
		&& getfacl -pcn "$MNT/a/acl" 2>/dev/null | grep -q '^user:1234:rw-' \
		&& ok "an extended ACL is stored; the mask is the group bits" || bad "extended ACL: mode $(stat -c %a "$MNT/a/acl"), $(getfacl -pcn "$MNT/a/acl" 2>&1 | tr '\n' ' ')"
	setfacl -d -m u:1234:rwx "$MNT/a/b" && getfacl -pcn "$MNT/a/b" 2>/dev/null | grep -q '^default:user:1234:rwx' \
		&& ok "a default ACL on a directory" || bad "default ACL"
	setfacl -b "$MNT/a/acl" && ! getfattr --absolute-names -n system.posix_acl_access "$MNT/a/acl" >/dev/null 2>&1 \
		&& ok "setfacl -b removes the ACL" || bad "setfacl -b"
fi

# removal
rm -rf "$MNT/copy/d1/d2" && [ ! -e "$MNT/copy/d1/d2" ] && ok "rm -rf of a subtree" || bad "rm -rf"
rmdir "$MNT/copy/d1" 2>/dev/null && bad "rmdir of a non-empty directory succeeded" || ok "rmdir of a non-empty directory refused"
rm "$MNT/a/b/f-hard" && [ "$(stat -c %h "$MNT/a/f")" = 1 ] && ok "unlink one hard link (nlink 1)" || bad "unlink hard link"
rmdir "$MNT/copy/empty" && ok "rmdir" || bad "rmdir"
mkdir "$MNT/gone"; for i in $(seq 1 300); do echo "$i" >"$MNT/gone/file-$i"; done
rm -rf "$MNT/gone" && [ ! -e "$MNT/gone" ] && ok "create and remove 300 files" || bad "rm -rf of 300 files"
for i in $(seq 1 400); do : >"$MNT/a/b/c/many-$i"; done
[ "$(ls "$MNT/a/b/c" | wc -l)" = 401 ] && ok "400 entries in one directory" || bad "readdir after creates: $(ls "$MNT/a/b/c" | wc -l)"

# concurrent writers (the daemon serves requests on several threads)
for j in 1 2 3 4 5 6; do
	(
		mkdir "$MNT/par$j"
		for i in $(seq 1 100); do
			head -c $((i * 997)) /dev/urandom >"$MNT/par$j/f$i"
			mv "$MNT/par$j/f$i" "$MNT/par$j/g$i"
			[ $((i % 3)) = 0 ] && rm "$MNT/par$j/g$i"
			ln -s "g$i" "$MNT/par$j/s$i"
		done
	) &
done
wait
n=$(find "$MNT"/par? -type f | wc -l)
[ "$n" = 402 ] && ok "6 concurrent writers" || bad "concurrent writers: $n files, wanted 402"

sleep 1.2 # let attributes cached by the kernel expire: the manifest must match the image
manifest "$MNT" "$T/m.fuse"
fuse_umount "$MNT"
check_image "after the ubtrfs workload"

# A fresh ubtrfs mount and the kernel see the same tree.
ubt_fuse_mount "$IMG" "$MNT" ro && { manifest "$MNT" "$T/m.fuse-ro"; fuse_umount "$MNT"; }
same_manifest "$T/m.fuse" "$T/m.fuse-ro" "a new read-only ubtrfs mount shows what was written"
kernel_mount "$IMG" "$KMNT" ro && { manifest "$KMNT" "$T/m.kernel"; kernel_umount "$KMNT"; }
same_manifest "$T/m.fuse" "$T/m.kernel" "the kernel shows what ubtrfs wrote"

# === the kernel writes, ubtrfs changes, the kernel reads back ===
if kernel_mount "$IMG" "$KMNT" rw; then
	mkdir -p "$KMNT/k/sub"
	head -c 777777 /dev/urandom >"$KMNT/k/kdata"
	echo "kernel was here" >>"$KMNT/a/f"
	mv "$KMNT/x3" "$KMNT/k/x3-from-kernel"
	rm -rf "$KMNT/doc"
	ln -s kdata "$KMNT/k/klink"
	setfattr -n user.kernel -v yes "$KMNT/k/kdata"
	chmod 0711 "$KMNT/k/sub"
	manifest "$KMNT" "$T/m.k1"
	kernel_umount "$KMNT"
fi
check_image "after the kernel's changes"
if ubt_fuse_mount "$IMG" "$MNT"; then
	manifest "$MNT" "$T/m.f1"
	same_manifest "$T/m.k1" "$T/m.f1" "ubtrfs shows what the kernel wrote"
	echo "ubtrfs again" >>"$MNT/k/kdata"
	dd if=/dev/urandom of="$MNT/k/kdata" bs=4096 seek=10 count=3 conv=notrunc status=none
	mv "$MNT/k/x3-from-kernel" "$MNT/k/sub/x3"
	rm "$MNT/k/klink"
	ln "$MNT/k/kdata" "$MNT/k/kdata-link"
	setfattr -x user.kernel "$MNT/k/kdata"
	setfattr -n user.fuse -v yes "$MNT/k/kdata"
	mkdir "$MNT/k/fromfuse"; cp -a "$SRC/d1" "$MNT/k/fromfuse/"
	truncate -s 4097 "$MNT/k/kdata"
	sleep 1.2
	manifest "$MNT" "$T/m.f2"
	fuse_umount "$MNT"
fi
check_image "after ubtrfs changed the kernel's files"
kernel_mount "$IMG" "$KMNT" ro && { manifest "$KMNT" "$T/m.k2"; kernel_umount "$KMNT"; }
same_manifest "$T/m.f2" "$T/m.k2" "the kernel reads back ubtrfs's changes to its files"

[ -z "$(daemons)" ] || bad "daemons left at the end: $(daemons)"
ubt_finish
