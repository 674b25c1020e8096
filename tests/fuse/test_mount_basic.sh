#!/bin/bash
# test_mount_basic.sh — `ubtrfs mount -o ro` of a mkfs.btrfs --rootdir image reads back what went
# in (data, dirs, symlinks, xattrs, a directory large enough to need several readdir calls),
# refuses writes, and `ubtrfs umount` returns only once the daemon has exited and freed the image.
set -u

source "$(dirname "$0")/../lib/common.sh"
ubt_skip_unless_root_fuse
ubt_skip_unless_cmds mkfs.btrfs mkfs.btrfs
ubt_need_ubtrfs

ubt_tmpdir fuse-basic
MNT=$T/mnt

# The daemon serving DIR, ignoring zombies (this machine's init may not reap them).
daemon_pid() { ubt_live_pids "ubtrfs mount .*$1( |\$)"; }

# --- the source tree ---
SRC=$T/src
mkdir -p "$SRC/dir/sub/deeper" "$SRC/many" "$SRC/empty" "$MNT"
echo hello > "$SRC/hello.txt"
: > "$SRC/zero"
head -c 1000000 /dev/urandom > "$SRC/dir/random.bin"
head -c 5000 /dev/urandom > "$SRC/dir/sub/small.bin"
dd if=/dev/urandom of="$SRC/dir/sparse" bs=4096 seek=100 count=2 status=none
yes 'compressible line of text' | head -c 300000 > "$SRC/dir/text"
ln -s hello.txt "$SRC/link"
ln -s "/nonexistent/$(printf 'a%.0s' $(seq 1 200))" "$SRC/dir/longlink"
ln "$SRC/hello.txt" "$SRC/dir/hardlink"
for i in $(seq 1 1500); do
	: > "$SRC/many/file-with-a-rather-long-name-to-fill-readdir-buffers-$i"
done
chmod 0750 "$SRC/dir/sub"
chmod 0604 "$SRC/dir/sub/small.bin"
setfattr -n user.color -v blue "$SRC/hello.txt"
setfattr -n user.empty "$SRC/hello.txt"
setfattr -n user.big -v "$(head -c 3000 /dev/zero | tr '\0' 'z')" "$SRC/dir/random.bin"
mkfs.btrfs -q -f --rootdir "$SRC" "$T/img" >"$T/mkfs.log" 2>&1 || { cat "$T/mkfs.log"; echo "FAIL: mkfs"; exit 1; }

# --- mount ---
if "$UBTRFS_BIN" mount -o ro "$T/img" "$MNT"; then ok "mount -o ro"; else bad "mount -o ro"; exit 1; fi
grep -q " $MNT fuse.ubtrfs ro," /proc/mounts && ok "listed as fuse.ubtrfs ro" || bad "not in /proc/mounts as fuse.ubtrfs ro"
PID=$(daemon_pid "$MNT")
[ -n "$PID" ] && ok "daemon pid $PID" || bad "no daemon found"

# --- contents ---
diff -r --no-dereference "$SRC" "$MNT" >"$T/diff.log" 2>&1 && ok "diff -r" || { bad "diff -r"; head "$T/diff.log"; }
for f in hello.txt zero dir/random.bin dir/sub/small.bin dir/sparse dir/text; do
	cmp -s "$SRC/$f" "$MNT/$f" || bad "cmp $f"
done
ok "cmp files"
# Directory sizes are the underlying filesystem's own: compare them only for non-directories.
listing() { (cd "$1" && { find . ! -type d -printf '%y %m %s %n %l %p\n'; find . -type d -printf '%y %m %p\n'; } | sort); }
listing "$SRC" > "$T/find.src"
listing "$MNT" > "$T/find.mnt"
cmp -s "$T/find.src" "$T/find.mnt" && ok "find listing (types, modes, sizes, links)" || { bad "find listing"; diff "$T/find.src" "$T/find.mnt" | head; }
[ "$(readlink "$MNT/link")" = hello.txt ] && ok readlink || bad readlink
[ "$(readlink "$MNT/dir/longlink")" = "$(readlink "$SRC/dir/longlink")" ] && ok "long readlink" || bad "long readlink"
[ "$(ls -f "$MNT/many" | grep -c file-with)" = 1500 ] && ok "readdir of 1500 entries (plain)" || bad "readdir count"
[ "$(ls -U1 "$MNT/many" | sort | uniq -d | wc -l)" = 0 ] || bad "duplicate readdir entries"
[ "$(ls -l "$MNT/many" | grep -c file-with)" = 1500 ] && ok "readdir with stat" || bad "ls -l count"
[ "$(getfattr --only-values -n user.color "$MNT/hello.txt" 2>/dev/null)" = blue ] && ok getxattr || bad getxattr
(cd "$SRC" && getfattr -d -m - dir/random.bin hello.txt) > "$T/xattr.src" 2>/dev/null
(cd "$MNT" && getfattr -d -m - dir/random.bin hello.txt) > "$T/xattr.mnt" 2>/dev/null
cmp -s "$T/xattr.src" "$T/xattr.mnt" && ok "listxattr/getxattr" || { bad "xattrs differ"; diff "$T/xattr.src" "$T/xattr.mnt"; }
getfattr -n user.nope "$MNT/hello.txt" >/dev/null 2>&1 && bad "missing xattr found" || ok "missing xattr"
[ "$(stat -c %h "$MNT/hello.txt")" = 2 ] && [ "$(stat -c %i "$MNT/hello.txt")" = "$(stat -c %i "$MNT/dir/hardlink")" ] \
	&& ok "hard link: same inode, nlink 2" || bad "hard link"
[ "$(stat -c %i "$MNT/hello.txt")" = "$(ls -i "$MNT" | awk '$2 == "hello.txt" { print $1 }')" ] && ok "d_ino == st_ino" || bad "d_ino != st_ino"
[ -e "$MNT/nope" ] && bad "nonexistent name exists" || ok "ENOENT"
df "$MNT" >/dev/null && ok statfs || bad statfs
stat -f -c %b "$MNT" | grep -qv '^0$' && ok "statfs blocks" || bad "statfs blocks"

# --- read-only ---
echo x 2>/dev/null > "$MNT/hello.txt" && bad "write succeeded" || ok "write refused"
touch "$MNT/newfile" 2>/dev/null && bad "create succeeded" || ok "create refused"
python3 -c 'import os,sys
try:
    os.open(sys.argv[1], os.O_RDWR)
    sys.exit(1)
except OSError as e:
    sys.exit(0 if e.errno == 30 else 2)' "$MNT/hello.txt" && ok "O_RDWR -> EROFS" || bad "O_RDWR not EROFS"
[ -r "$MNT/hello.txt" ] && ok "access R_OK" || bad "access R_OK"

# --- a waiting unmount ---
if "$UBTRFS_BIN" umount "$MNT"; then ok "ubtrfs umount"; else bad "ubtrfs umount"; fi
if [ -n "$PID" ] && ubt_pid_alive "$PID"; then bad "daemon $PID still running after ubtrfs umount"; else ok "daemon gone when umount returned"; fi
flock -n -x "$T/img" true && ok "image lock released" || bad "image still locked"
grep -q " $MNT " /proc/mounts && bad "still mounted" || ok "unmounted"
[ -z "$(ls -A "$MNT")" ] && ok "mountpoint left empty" || bad "files left in the mountpoint"

# --- SIGTERM ends the daemon cleanly; foreground mode ---
"$UBTRFS_BIN" mount -f -o ro "$T/img" "$MNT" &
FG=$!
for i in $(seq 1 50); do grep -q " $MNT " /proc/mounts && break; sleep 0.1; done
grep -q " $MNT " /proc/mounts && ok "foreground mount" || bad "foreground mount"
cat "$MNT/hello.txt" >/dev/null || bad "read in foreground mount"
kill -TERM "$FG"
wait "$FG"; rc=$?
[ "$rc" = 0 ] && ok "SIGTERM exit 0" || bad "SIGTERM exit status $rc"
grep -q " $MNT " /proc/mounts && bad "still mounted after SIGTERM" || ok "unmounted on SIGTERM"

# --- plain umount also ends the daemon; the next mount waits for the image if need be ---
"$UBTRFS_BIN" mount -o ro "$T/img" "$MNT" || bad "remount after SIGTERM"
umount "$MNT"
"$UBTRFS_BIN" mount -o ro "$T/img" "$MNT" && ok "mount right after plain umount" || bad "mount right after plain umount"
"$UBTRFS_BIN" umount "$MNT" || bad "final umount"

ubt_finish
