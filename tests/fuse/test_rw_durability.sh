#!/bin/bash
# test_rw_durability.sh — however a read-write ubtrfs mount ends (`ubtrfs umount`, umount(8),
# fusermount3 -u, SIGTERM to the daemon), the image is committed once the daemon has exited:
# `btrfs check --readonly` passes and the kernel reads what was written. While mounted, data
# made durable by fsync of the file, by fsync of a directory (`sync DIR`; FUSE 3.14 has no
# syncfs request, so `sync -f` and sync(2) do not reach the daemon), or by the commit=N timer is
# in the image file.
set -u

source "$(dirname "$0")/../lib/common.sh"
ubt_skip_unless_root_fuse
ubt_need mkfs.btrfs btrfs losetup python3 fusermount3
ubt_need_ubtrfs
MANIFEST=${UBT_TOOLS_DIR:-${UBT_BUILD_DIR:-.}/tests}/manifest
[ -x "$MANIFEST" ] || { echo "FAIL: no manifest tool at $MANIFEST"; exit 1; }

ubt_tmpdir rw-durability
IMG=$T/img
MNT=$T/mnt
KMNT=$T/kmnt

ubt_teardown_pre() { ubt_kill $(daemons); } # the daemons of this test's mounts

daemons() { ubt_live_pids "ubtrfs mount .*$T/"; }
wait_gone() { ubt_wait_until 60 ubt_pids_gone "$1"; } # PID: wait up to 60 s for it to exit
# kernel_check IMG EXPECTED-MANIFEST WHAT: btrfs check passes and the kernel shows the manifest.
kernel_check() {
	local img=$1 want=$2 what=$3 l
	if btrfs check --readonly "$img" >"$T/check.out" 2>&1; then
		ok "$what: btrfs check --readonly"
	else
		bad "$what: btrfs check --readonly:"; tail -n 20 "$T/check.out"
	fi
	l=$(losetup -f --show "$img") || { bad "losetup"; return; }
	UBT_LOOPS+=("$l")
	if mount -t btrfs -o ro "$l" "$KMNT"; then
		"$MANIFEST" dir "$KMNT" >"$T/m.kernel" 2>&1 || bad "$what: manifest through the kernel"
		umount "$KMNT"
		if diff -u "$want" "$T/m.kernel" >"$T/diff.out"; then
			ok "$what: the kernel reads what was written"
		else
			bad "$what: the kernel's view differs:"; head -n 30 "$T/diff.out"
		fi
	else
		bad "$what: kernel mount failed"
	fi
	losetup -d "$l"
}
# A write workload; then the manifest as ubtrfs shows it, into $T/m.fuse.
workload() { # TAG
	mkdir -p "$MNT/$1/sub"
	head -c 2000000 /dev/urandom >"$MNT/$1/data"
	echo "$1" >"$MNT/$1/sub/name"
	ln -s data "$MNT/$1/link"
	mv "$MNT/$1/sub/name" "$MNT/$1/renamed"
	sleep 1.2
	"$MANIFEST" dir "$MNT" >"$T/m.fuse" 2>&1 || bad "manifest through ubtrfs"
}

mkdir -p "$MNT" "$KMNT"
truncate -s 512M "$IMG"
mkfs.btrfs -q -f "$IMG" >"$T/mkfs.out" 2>&1 || { cat "$T/mkfs.out"; echo "FAIL: mkfs.btrfs"; exit 1; }

# 1. ubtrfs umount: returns once the daemon has committed and exited.
if ubt_fuse_mount "$IMG" "$MNT"; then
	workload one
	"$UBTRFS_BIN" umount "$MNT" || bad "ubtrfs umount"
	[ -z "$(daemons)" ] && ok "ubtrfs umount waited for the daemon" || bad "daemon alive after ubtrfs umount"
	kernel_check "$IMG" "$T/m.fuse" "ubtrfs umount"
fi

# 2. umount(8), 3. fusermount3 -u, 4. SIGTERM: wait for the daemon, then the image is whole.
for how in umount fusermount sigterm; do
	ubt_fuse_mount "$IMG" "$MNT" || continue
	pid=$(daemons)
	workload "$how"
	case $how in
	umount) umount "$MNT" || bad "umount(8)" ;;
	fusermount) fusermount3 -u "$MNT" || bad "fusermount3 -u" ;;
	sigterm) kill -TERM "$pid" ;;
	esac
	if wait_gone "$pid"; then
		ok "$how: the daemon exited"
	else
		bad "$how: the daemon is still running after 60 s"
		continue
	fi
	grep -q " $MNT " /proc/mounts && { bad "$how: still mounted"; umount -l "$MNT"; }
	kernel_check "$IMG" "$T/m.fuse" "$how"
done

# 5. While mounted: fsync, syncfs and the commit timer make data durable in the image file.
snapshot_check() { # WHAT FILE CONTENT-FILE: a copy of the image, taken now, has FILE as CONTENT
	local what=$1 file=$2 want=$3 l
	cp --sparse=always "$IMG" "$T/copy.img"
	if btrfs check --readonly "$T/copy.img" >"$T/check.out" 2>&1; then
		ok "$what: the image copied while mounted passes btrfs check"
	else
		bad "$what: btrfs check of the copy:"; tail -n 20 "$T/check.out"
	fi
	l=$(losetup -f --show "$T/copy.img") || { bad "losetup"; return; }
	UBT_LOOPS+=("$l")
	if mount -t btrfs -o ro "$l" "$KMNT"; then
		cmp -s "$want" "$KMNT/$file" && ok "$what: the data is in the image" || bad "$what: $file missing or different in the copy"
		umount "$KMNT"
	else
		bad "$what: kernel mount of the copy failed"
	fi
	losetup -d "$l"
	rm -f "$T/copy.img"
}
head -c 300000 /dev/urandom >"$T/payload"
if ubt_fuse_mount "$IMG" "$MNT" commit=2; then
	python3 -c 'import os,sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o644)
os.write(fd, open(sys.argv[2], "rb").read())
os.fsync(fd)
os.close(fd)' "$MNT/fsynced" "$T/payload"
	snapshot_check "fsync" fsynced "$T/payload"
	cp "$T/payload" "$MNT/synced"
	sync "$MNT"
	snapshot_check "fsync of a directory" synced "$T/payload"
	cp "$T/payload" "$MNT/timer"
	sleep 5
	snapshot_check "commit=2 timer" timer "$T/payload"
	"$UBTRFS_BIN" umount "$MNT" || bad "ubtrfs umount"
fi

[ -z "$(daemons)" ] || bad "daemons left at the end: $(daemons)"
ubt_finish
