#!/usr/bin/env bash
# test_acl.sh — POSIX ACLs: with -o acl the kernel enforces them on a ubtrfs mount (a named-user
# entry denies that user, others keep their access); without it only the mode bits count. The
# ACL survives unmount, the kernel's btrfs reads the same ACL, and btrfs check passes.
set -euo pipefail
if [[ $(id -u) -ne 0 || ! -c /dev/fuse ]]; then
	echo "SKIP: needs root and /dev/fuse"
	exit 0
fi
UBTRFS_BIN=${UBTRFS_BIN:?}
T=$(mktemp -d /tmp/ubt-acl.XXXXXX)
chmod 755 "$T"
MNT=$T/mnt KMNT=$T/kmnt IMG=$T/img
mkdir -p "$MNT" "$KMNT"
cleanup() {
	mountpoint -q "$MNT" && { "$UBTRFS_BIN" umount "$MNT" || umount -l "$MNT"; }
	mountpoint -q "$KMNT" && umount "$KMNT"
	rm -rf "$T"
}
trap cleanup EXIT
fails=0
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }
as_user() { setpriv --reuid="$1" --regid="$1" --clear-groups "${@:2}"; }

"$UBTRFS_BIN" mkfs -q -f -b 256M "$IMG" >/dev/null
"$UBTRFS_BIN" mount -o acl,allow_other "$IMG" "$MNT"
echo secret >"$MNT/f"
chmod 644 "$MNT/f"
setfacl -m u:1234:--- "$MNT/f"
as_user 1234 cat "$MNT/f" >/dev/null 2>&1 && bad "acl: user 1234 could read a file its ACL entry denies" || ok "acl: the named-user entry denies user 1234"
as_user 1235 cat "$MNT/f" >/dev/null 2>&1 && ok "acl: other users keep read access" || bad "acl: user 1235 lost access"
mkdir "$MNT/d"
chmod 700 "$MNT/d"
setfacl -m u:1235:rx "$MNT/d"
as_user 1235 ls "$MNT/d" >/dev/null 2>&1 && ok "acl: a named-user entry grants access the mode does not" || bad "acl: user 1235 denied despite its ACL entry"
"$UBTRFS_BIN" umount "$MNT"

"$UBTRFS_BIN" mount -o allow_other "$IMG" "$MNT"
as_user 1234 cat "$MNT/f" >/dev/null 2>&1 && ok "noacl: only the mode bits count" || bad "noacl: ACL enforced without -o acl"
"$UBTRFS_BIN" umount "$MNT"

if btrfs check --readonly "$IMG" >"$T/check.log" 2>&1; then ok "btrfs check"; else bad "btrfs check"; cat "$T/check.log"; fi
mount -o loop,ro "$IMG" "$KMNT"
getfacl -c "$KMNT/f" 2>/dev/null | grep -q "^user:1234:---" && ok "the kernel reads the same ACL" || bad "the kernel does not see the ACL"
as_user 1234 cat "$KMNT/f" >/dev/null 2>&1 && bad "kernel: user 1234 could read" || ok "kernel: enforces the same ACL"
umount "$KMNT"
if ((fails)); then
	echo "FAILED: $fails check(s)"
	exit 1
fi
echo "acl: all checks passed"
