#!/usr/bin/env bash
# test_acl.sh — POSIX ACLs: with -o acl the kernel enforces them on a ubtrfs mount (a named-user
# entry denies that user, others keep their access); without it only the mode bits count. The
# ACL survives unmount, the kernel's btrfs reads the same ACL, and btrfs check passes. Default
# ACLs are inherited by new files, directories and nodes exactly as on the kernel's btrfs (the
# same sequence run on both; modes and ACLs compared, also of the image the kernel mounts after).
set -euo pipefail
source "$(dirname "$0")/../lib/common.sh"
ubt_skip_unless_root_fuse
ubt_need mkfs.btrfs btrfs setfacl getfacl setpriv
ubt_tool_paths
ubt_need_ubtrfs
ubt_tmpdir acl
chmod 755 "$T" # other users walk through it to the mount
MNT=$T/mnt KMNT=$T/kmnt IMG=$T/img
mkdir -p "$MNT" "$KMNT"
as_user() { setpriv --reuid="$1" --regid="$1" --clear-groups "${@:2}"; }

"$UBTRFS_BIN" mkfs -q -f -b 256M "$IMG" >/dev/null
ubt_fuse_mount "$IMG" "$MNT" acl,allow_other
echo secret >"$MNT/f"
chmod 644 "$MNT/f"
setfacl -m u:1234:--- "$MNT/f"
as_user 1234 cat "$MNT/f" >/dev/null 2>&1 && bad "acl: user 1234 could read a file its ACL entry denies" || ok "acl: the named-user entry denies user 1234"
as_user 1235 cat "$MNT/f" >/dev/null 2>&1 && ok "acl: other users keep read access" || bad "acl: user 1235 lost access"
mkdir "$MNT/d"
chmod 700 "$MNT/d"
setfacl -m u:1235:rx "$MNT/d"
as_user 1235 ls "$MNT/d" >/dev/null 2>&1 && ok "acl: a named-user entry grants access the mode does not" || bad "acl: user 1235 denied despite its ACL entry"
ubt_fuse_umount "$MNT"

ubt_fuse_mount "$IMG" "$MNT" allow_other
as_user 1234 cat "$MNT/f" >/dev/null 2>&1 && ok "noacl: only the mode bits count" || bad "noacl: ACL enforced without -o acl"
ubt_fuse_umount "$MNT"

# Inheritance: the same sequence in a ubtrfs -o acl mount and on the kernel's btrfs.
inherit_ops() { # DIR
	(
		cd "$1"
		mkdir d nd
		setfacl -d -m u:1234:rwx,g::r-x,o::--- d
		umask 022
		touch d/f nd/f
		mkdir d/sub nd/sub
		mknod d/p p
		ln -s f d/l
		(umask 077 && touch d/g)
		(umask 0 && echo x >d/h)
		setfacl -d -m u::rwx,g::rwx,o::rwx d/sub
		touch d/sub/plain
		mkdir d/sub/deeper
	)
}
INHERIT_PATHS=(d nd d/f nd/f d/sub nd/sub d/p d/g d/h d/sub/plain d/sub/deeper)
inherit_view() { # DIR OUT
	local p
	for p in "${INHERIT_PATHS[@]}"; do
		stat -c '%n %A %u %g' "$1/$p" | sed "s|^$1/||"
		getfacl -n -p "$1/$p" 2>/dev/null | sed "s|^# file: $1/|# file: |"
	done >"$2"
}
KIMG=$T/kimg
truncate -s 256M "$KIMG"
mkfs.btrfs -q -f "$KIMG" >/dev/null
mount -o loop "$KIMG" "$KMNT"
mkdir "$KMNT/inh"
inherit_ops "$KMNT/inh"
inherit_view "$KMNT/inh" "$T/inherit.kernel"
umount "$KMNT"
ubt_fuse_mount "$IMG" "$MNT" acl,allow_other
mkdir "$MNT/inh"
inherit_ops "$MNT/inh"
inherit_view "$MNT/inh" "$T/inherit.ubtrfs"
grep -q "^user:1234:rwx" "$T/inherit.ubtrfs" || bad "inherit: no named-user entry was inherited at all"
if diff -u "$T/inherit.kernel" "$T/inherit.ubtrfs"; then
	ok "inherit: modes and ACLs of new inodes as on the kernel's btrfs"
else
	bad "inherit: modes or ACLs differ from the kernel's btrfs (diff above)"
fi
as_user 1234 sh -c "echo y >>'$MNT/inh/d/f'" 2>/dev/null && ok "inherit: user 1234 may write through its inherited entry" || bad "inherit: user 1234 denied"
ubt_fuse_umount "$MNT"

ubt_check_image "$IMG" "after the ACL rounds"
mount -o loop,ro "$IMG" "$KMNT"
inherit_view "$KMNT/inh" "$T/inherit.ondisk"
umount "$KMNT"
diff -u "$T/inherit.kernel" "$T/inherit.ondisk" && ok "inherit: the kernel reads the same modes and ACLs from the image" || bad "inherit: the image differs under the kernel"
mount -o loop,ro "$IMG" "$KMNT"
getfacl -c "$KMNT/f" 2>/dev/null | grep -q "^user:1234:---" && ok "the kernel reads the same ACL" || bad "the kernel does not see the ACL"
as_user 1234 cat "$KMNT/f" >/dev/null 2>&1 && bad "kernel: user 1234 could read" || ok "kernel: enforces the same ACL"
umount "$KMNT"
ubt_finish
