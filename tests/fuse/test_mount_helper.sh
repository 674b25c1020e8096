#!/bin/bash
# test_mount_helper.sh — `mount -t fuse.ubtrfs -o ro IMAGE DIR` through scripts/mount.fuse.ubtrfs
# (installed as /sbin/mount.fuse.ubtrfs for the test: mount(8) has no helper search path), the
# options mount(8) adds are dropped, a mount without ro is read-write, and `-o remount` is refused
# without starting a second daemon.
set -u

source "$(dirname "$0")/../lib/common.sh"
ubt_skip_unless_root_fuse
ubt_skip_unless_cmds mkfs.btrfs mkfs.btrfs
ubt_need_ubtrfs
SRC_DIR=${UBT_SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
HELPER_SRC=$SRC_DIR/scripts/mount.fuse.ubtrfs
HELPER=/sbin/mount.fuse.ubtrfs
[ -f "$HELPER_SRC" ] || { echo "FAIL: no helper at $HELPER_SRC"; exit 1; }
export UBTRFS_BIN

ubt_tmpdir fuse-helper
MNT=$T/mnt
installed=0

ubt_teardown_post() { # put back the helper we replaced
	if [ "$installed" = 1 ]; then
		rm -f "$HELPER"
		[ -e "$T/helper.orig" ] && mv "$T/helper.orig" "$HELPER"
	fi
}

daemons() { ubt_live_pids "ubtrfs mount .*$T"; }

mkdir -p "$T/src/d" "$MNT"
echo "via the helper" > "$T/src/d/f"
mkfs.btrfs -q -f --rootdir "$T/src" "$T/img" >"$T/mkfs.log" 2>&1 || { cat "$T/mkfs.log"; echo "FAIL: mkfs"; exit 1; }

[ -e "$HELPER" ] && cp -p "$HELPER" "$T/helper.orig"
installed=1
install -m 0755 "$HELPER_SRC" "$HELPER"

# The helper alone: fake mode (-f) only shows what it would run.
"$HELPER" "$T/img" "$MNT" -fv -o rw,defaults,noauto,user,_netdev,nofail,x-systemd.foo,ro,nosuid 2>"$T/out"
grep -q -- "mount $T/img $MNT -o ro,nosuid\$" "$T/out" && ok "helper drops mount(8)-only options" \
	|| { bad "helper option filtering"; cat "$T/out"; }

# Without $UBTRFS_BIN the helper finds ubtrfs next to itself.
mkdir -p "$T/bin"
cp "$HELPER_SRC" "$T/bin/mount.fuse.ubtrfs"
ln -s "$UBTRFS_BIN" "$T/bin/ubtrfs"
env -u UBTRFS_BIN "$T/bin/mount.fuse.ubtrfs" "$T/img" "$MNT" -fv -o ro 2>"$T/out"
grep -q -- "^mount.fuse.ubtrfs: $T/bin/ubtrfs mount" "$T/out" && ok "helper finds ubtrfs next to itself" \
	|| { bad "helper did not find ubtrfs next to itself"; cat "$T/out"; }

# mount(8) without ro: a read-write mount.
if mount -t fuse.ubtrfs "$T/img" "$MNT" 2>"$T/out"; then
	grep -q " $MNT fuse.ubtrfs rw," /proc/mounts && ok "mount(8) without ro is read-write" \
		|| bad "mount(8) without ro: $(grep " $MNT " /proc/mounts)"
	"$UBTRFS_BIN" umount "$MNT" || bad "umount of the rw mount"
else
	bad "mount -t fuse.ubtrfs without ro failed: $(cat "$T/out")"
fi
[ -z "$(daemons)" ] || bad "daemon left after the rw mount"

# mount(8) with ro.
if mount -t fuse.ubtrfs -o ro "$T/img" "$MNT" 2>"$T/out"; then ok "mount -t fuse.ubtrfs -o ro"; else bad "mount -t fuse.ubtrfs -o ro: $(cat "$T/out")"; fi
[ "$(cat "$MNT/d/f" 2>/dev/null)" = "via the helper" ] && ok "reads through the helper's mount" || bad "read"
grep -q " $MNT fuse.ubtrfs ro" /proc/mounts && ok "in /proc/mounts" || bad "not in /proc/mounts"
n=$(daemons | wc -l)
[ "$n" = 1 ] && ok "one daemon" || bad "$n daemons"
PID=$(daemons)

# remount: refused, still one daemon, mount still works.
if mount -o remount,ro "$MNT" 2>"$T/out"; then
	bad "remount succeeded"
else
	grep -q "remount is not supported" "$T/out" && ok "remount refused ($(head -n1 "$T/out"))" || { bad "remount message"; cat "$T/out"; }
fi
[ "$(daemons | wc -l)" = 1 ] && ok "no second daemon after remount" || bad "daemons after remount: $(daemons)"
[ "$(cat "$MNT/d/f" 2>/dev/null)" = "via the helper" ] && ok "mount intact after remount attempt" || bad "mount broken by remount"
if "$HELPER" "$T/img" "$MNT" -o remount,ro 2>/dev/null; then bad "helper remount exit 0"; else ok "helper remount exits non-zero"; fi

# A second mount(8) on the busy mountpoint is refused.
if mount -t fuse.ubtrfs -o ro "$T/img" "$MNT" 2>"$T/out"; then bad "double mount succeeded"; else ok "double mount refused ($(head -n1 "$T/out"))"; fi
[ "$(daemons | wc -l)" = 1 ] || bad "daemons after double mount: $(daemons)"

"$UBTRFS_BIN" umount "$MNT" && ok "ubtrfs umount" || bad "ubtrfs umount"
if [ -n "$PID" ] && ubt_pid_alive "$PID"; then bad "daemon still alive after umount"; else ok "daemon exited"; fi

# An fstab-style mount by mountpoint only.
echo "$T/img $MNT fuse.ubtrfs ro,noauto,nofail 0 0" > "$T/fstab"
if mount --fstab "$T/fstab" "$MNT" 2>"$T/out"; then ok "mount from an fstab line"; else bad "fstab mount: $(cat "$T/out")"; fi
[ "$(cat "$MNT/d/f" 2>/dev/null)" = "via the helper" ] || bad "read after fstab mount"
"$UBTRFS_BIN" umount "$MNT" || bad "umount after fstab mount"

[ -z "$(daemons)" ] || bad "daemons left at the end: $(daemons)"
ubt_finish
