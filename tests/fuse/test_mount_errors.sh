#!/bin/bash
# test_mount_errors.sh — failing mounts exit non-zero with a message and leave no daemon and
# nothing in the mountpoint: bad image, missing image, bad options, missing, busy or
# non-directory mountpoint (and ro/rw: read-write is the default, the last of ro/rw wins); the image lock (an exclusive holder refuses us, two ro mounts
# share it, a holder that lets go within lock_timeout is waited for); CLI usage errors.
set -u

source "$(dirname "$0")/../lib/common.sh"
ubt_skip_unless_root_fuse
ubt_skip_unless_cmds mkfs.btrfs mkfs.btrfs
ubt_need_ubtrfs

ubt_tmpdir fuse-errors
MNT=$T/mnt
MNT2=$T/mnt2
PIDS=()

ubt_teardown_pre() { # the mounts this test started in the background
	local p
	for p in "${PIDS[@]}"; do
		pkill -P "$p" 2>/dev/null
		kill "$p" 2>/dev/null
	done
}

# Live (non-zombie) ubtrfs processes whose command line mentions this test's directory.
daemons() { ubt_live_pids "ubtrfs (mount|umount) .*$T"; }
mounted() { grep -q " $1 " /proc/mounts; }

# expect_fail NAME STATUS PATTERN -- CMD...: CMD exits with STATUS, says PATTERN, leaves no daemon.
expect_fail() {
	local name=$1 want=$2 pat=$3 rc
	shift 4
	"$@" >"$T/out" 2>&1
	rc=$?
	if [ "$rc" != "$want" ]; then
		bad "$name: exit $rc, wanted $want"; cat "$T/out"
	elif ! grep -Eq -- "$pat" "$T/out"; then
		bad "$name: message does not match '$pat'"; cat "$T/out"
	elif [ -n "$(daemons)" ]; then
		bad "$name: daemon left behind: $(daemons)"
	elif mounted "$MNT"; then
		bad "$name: mounted anyway"
	elif [ -n "$(ls -A "$MNT")" ]; then
		bad "$name: something was written into the mountpoint"
	else
		ok "$name ($(head -n1 "$T/out"))"
	fi
}

mkdir -p "$T/src/d" "$MNT" "$MNT2"
echo data > "$T/src/d/f"
mkfs.btrfs -q -f --rootdir "$T/src" "$T/img" >"$T/mkfs.log" 2>&1 || { cat "$T/mkfs.log"; echo "FAIL: mkfs"; exit 1; }
head -c 2000000 /dev/urandom > "$T/garbage"
touch "$T/plainfile"

# --- usage and options ---
expect_fail "no arguments" 2 "usage" -- "$UBTRFS_BIN"
expect_fail "unknown command" 2 "unknown command" -- "$UBTRFS_BIN" frobnicate
expect_fail "mount without args" 2 "expected IMAGE and DIR" -- "$UBTRFS_BIN" mount
# Read-write is the default; the last of ro/rw wins.
for o in "" rw ro,rw rw,ro; do
	want=rw
	[ "$o" = rw,ro ] && want=ro
	if "$UBTRFS_BIN" mount ${o:+-o "$o"} "$T/img" "$MNT" >"$T/out" 2>&1; then
		grep -q " $MNT fuse.ubtrfs $want," /proc/mounts && ok "mount ${o:+-o $o }is $want" \
			|| bad "mount ${o:+-o $o}: not $want: $(grep " $MNT " /proc/mounts)"
		"$UBTRFS_BIN" umount "$MNT" || bad "umount after mount ${o:+-o $o}"
	else
		bad "mount ${o:+-o $o }failed: $(cat "$T/out")"
	fi
done
expect_fail "unknown FUSE option" 2 "unknown option" -- "$UBTRFS_BIN" mount -o ro,no_such_option "$T/img" "$MNT"
expect_fail "bad cache size" 2 "cache=12q" -- "$UBTRFS_BIN" mount -o ro,cache=12q "$T/img" "$MNT"
expect_fail "bad subvolid" 2 "subvolid=abc" -- "$UBTRFS_BIN" mount -o ro,subvolid=abc "$T/img" "$MNT"
expect_fail "unknown flag" 2 "unknown option" -- "$UBTRFS_BIN" mount -x -o ro "$T/img" "$MNT"
expect_fail "umount without DIR" 2 "expected DIR" -- "$UBTRFS_BIN" umount
"$UBTRFS_BIN" --version | grep -q '^ubtrfs [0-9]' && ok "--version" || bad "--version"
"$UBTRFS_BIN" help mount | grep -q 'subvol=' && ok "help mount" || bad "help mount"

# --- bad images ---
expect_fail "garbage image" 1 "cannot mount" -- "$UBTRFS_BIN" mount -o ro "$T/garbage" "$MNT"
expect_fail "missing image" 1 "cannot open image" -- "$UBTRFS_BIN" mount -o ro "$T/nope.img" "$MNT"
expect_fail "image is a directory" 1 "neither a regular file nor a block device" -- "$UBTRFS_BIN" mount -o ro "$T/src" "$MNT"
expect_fail "nonexistent subvolid" 1 "not found" -- "$UBTRFS_BIN" mount -o ro,subvolid=4242 "$T/img" "$MNT"
expect_fail "nonexistent subvol" 1 "not found" -- "$UBTRFS_BIN" mount -o ro,subvol=no/such "$T/img" "$MNT"
# Foreground mode fails the same way.
expect_fail "garbage image, -f" 1 "cannot mount" -- "$UBTRFS_BIN" mount -f -o ro "$T/garbage" "$MNT"

# --- mountpoints ---
expect_fail "missing mountpoint" 1 "does not exist" -- "$UBTRFS_BIN" mount -o ro "$T/img" "$T/nodir"
expect_fail "mountpoint is a file" 1 "not a directory" -- "$UBTRFS_BIN" mount -o ro "$T/img" "$T/plainfile"
"$UBTRFS_BIN" mount -o ro "$T/img" "$MNT2" || bad "mount on $MNT2"
before=$(daemons | wc -l)
"$UBTRFS_BIN" mount -o ro "$T/img" "$MNT2" >"$T/out" 2>&1
rc=$?
if [ "$rc" = 1 ] && grep -q busy "$T/out" && [ "$(daemons | wc -l)" = "$before" ] && \
   [ "$(grep -c " $MNT2 " /proc/mounts)" = 1 ]; then
	ok "busy mountpoint refused ($(head -n1 "$T/out"))"
else
	bad "busy mountpoint: exit $rc, $(cat "$T/out")"
fi

# --- the image lock ---
# Two read-only mounts share it.
"$UBTRFS_BIN" mount -o ro "$T/img" "$MNT" && mounted "$MNT" && [ "$(cat "$MNT/d/f")" = data ] \
	&& ok "second ro mount of the same image" || bad "second ro mount"
"$UBTRFS_BIN" umount "$MNT" || bad "umount $MNT"
"$UBTRFS_BIN" umount "$MNT2" || bad "umount $MNT2"
# An exclusive holder (what a read-write mount takes) keeps us out...
flock -o -x "$T/img" sleep 60 &
PIDS+=($!)
sleep 0.3
expect_fail "image locked exclusively" 1 "in use" -- "$UBTRFS_BIN" mount -o ro,lock_timeout=1 "$T/img" "$MNT"
pkill -P "${PIDS[-1]}"; kill "${PIDS[-1]}" 2>/dev/null; wait "${PIDS[-1]}" 2>/dev/null
# ...and one that lets go within lock_timeout (a daemon still exiting) is waited for.
flock -o -x "$T/img" sleep 1.5 &
PIDS+=($!)
sleep 0.3
start=$(date +%s.%N)
if "$UBTRFS_BIN" mount -o ro,lock_timeout=10 "$T/img" "$MNT" 2>"$T/out" && mounted "$MNT"; then
	ok "mount waited $(echo "$(date +%s.%N) - $start" | bc 2>/dev/null || echo '?') s for the lock"
else
	bad "mount did not wait for the lock: $(cat "$T/out")"
fi
"$UBTRFS_BIN" umount "$MNT" || bad "umount after waiting mount"

# --- umount of something not mounted ---
expect_fail "umount of an unmounted dir" 1 "failed|not mounted" -- "$UBTRFS_BIN" umount "$MNT"

[ -z "$(daemons)" ] || bad "daemons left at the end: $(daemons)"
ubt_finish
