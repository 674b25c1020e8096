#!/bin/bash
# test_enospc.sh — a 256 MiB image filled to ENOSPC, emptied and filled again.
#
# Through the library (tests/tools/ubt_workload script; `fill` writes 1 MiB files until a write
# returns ENOSPC, any other error fails):
#  - data: the write that does not fit returns ENOSPC, nothing aborts (the same mount then
#    creates and writes a small file and commits); df's available space is (almost) gone; after
#    deleting every other file and a commit, statfs shows the space back; filling again works;
#  - metadata: small inline files until ENOSPC; unlink, rmdir and a whole-tree removal still
#    work on the full filesystem; then it fills again;
#  - deleted data makes room for metadata: 1 MiB files until ENOSPC, all deleted, then small
#    inline files fit as many as on a fresh image (the emptied data block groups are removed,
#    as btrfs's cleaner removes them, and their space is given to metadata chunks);
# `btrfs check --readonly` after every step. Then the same through a `ubtrfs mount`: dd until
# "No space left on device", the mount stays writable, rm frees space (df), writing again works,
# small files until ENOSPC, rm -rf, check. And with -o writeback_cache (writes accepted by the
# kernel before ubtrfs sees them): fsync reports ENOSPC, the image stays valid.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
rw_init enospc

IMG=$RW_TMP/img
MNT=$RW_TMP/mnt
KMNT=$RW_TMP/kmnt
MiB=$((1024 * 1024))

# lib STEP < SCRIPT: run a driver script; its output in $RW_TMP/out.
lib() {
	if "$WORKLOAD" script "$IMG" >"$RW_TMP/out" 2>&1; then
		rw_ok "library: $1"
	else
		cat "$RW_TMP/out"
		rw_bad "library: $1"
		return 1
	fi
}
# Fields of the last "statfs" line: avail and free bytes.
avail_bytes() { awk '/^statfs/ { a = $7 * $9 } END { print a }' "$RW_TMP/out"; }
filled() { awk '/^filled/ { print $2, $4 }' "$RW_TMP/out"; }

# ---- library, data ----
rw_log "=== library: data"
rw_mkfs "$IMG" 256M kernel
lib "fill with 1 MiB files until ENOSPC, then create + write + commit on the same mount" <<'EOF'
mkdir /fill
statfs
fill /fill 1048576
create /after-enospc
write /after-enospc 0 1000 7
sync
statfs
EOF
read -r nfiles nbytes <<<"$(filled)"
avail=$(avail_bytes)
rw_log "filled $nfiles files, $((nbytes / MiB)) MiB; statfs avail $((avail / MiB)) MiB afterwards"
((nbytes > 150 * MiB)) && rw_ok "filled $((nbytes / MiB)) MiB of 256 MiB" || rw_bad "only $((nbytes / MiB)) MiB fit"
((avail < 4 * MiB)) && rw_ok "statfs: $((avail / MiB)) MiB available when full" ||
	rw_bad "statfs: $((avail / MiB)) MiB available on a full filesystem"
rw_check "$IMG" "data full"

{
	echo statfs
	for ((i = 0; i < nfiles; i += 2)); do printf 'unlink /fill/f%06d\n' "$i"; done
	echo statfs
	echo sync
	echo statfs
} >"$RW_TMP/del"
lib "delete every other file, commit" <"$RW_TMP/del"
avail2=$(avail_bytes)
freed=$((((nfiles + 1) / 2) * MiB))
rw_log "statfs avail after the deletes and a commit: $((avail2 / MiB)) MiB (deleted $((freed / MiB)) MiB)"
((avail2 >= avail + freed - 8 * MiB)) && rw_ok "statfs shows the deleted space back" ||
	rw_bad "statfs avail $((avail2 / MiB)) MiB after deleting $((freed / MiB)) MiB"
rw_check "$IMG" "after the deletes"
lib "fill again" <<'EOF'
mkdir /fill2
fill /fill2 1048576
sync
EOF
read -r n2 b2 <<<"$(filled)"
rw_log "filled again: $n2 files, $((b2 / MiB)) MiB"
((b2 >= freed - 8 * MiB)) && rw_ok "the freed space was filled again" || rw_bad "only $((b2 / MiB)) MiB fit again"
rw_check "$IMG" "full again"
rw_kmount "$IMG" "$KMNT" ro
nk=$(find "$KMNT/fill" "$KMNT/fill2" -type f | wc -l)
rw_kumount "$KMNT"
[[ $nk -eq $((nfiles / 2 + n2)) ]] && rw_ok "the kernel sees the $nk files" || rw_bad "the kernel sees $nk files, not $((nfiles / 2 + n2))"

# ---- library, metadata ----
rw_log "=== library: metadata"
rw_mkfs "$IMG" 256M kernel
lib "fill with small inline files until ENOSPC" <<'EOF'
mkdir /small
fill /small 2000
sync
EOF
read -r nsmall _ <<<"$(filled)"
rw_log "$nsmall small files"
rw_check "$IMG" "metadata full"
lib "unlink, rmdir and rm -r on the full filesystem" <<'EOF'
unlink /small/f000001
unlink /small/f000002
sync
rmtree /small
sync
create /after
write /after 0 3000 1
sync
EOF
rw_check "$IMG" "after emptying"
lib "fill again with small files" <<'EOF'
mkdir /small2
fill /small2 2000
sync
EOF
read -r nsmall2 _ <<<"$(filled)"
((nsmall2 * 10 >= nsmall * 9)) && rw_ok "filled again: $nsmall2 small files" || rw_bad "only $nsmall2 small files fit again (first $nsmall)"
rw_check "$IMG" "metadata full again"

# ---- library, deleted data makes room for metadata ----
rw_log "=== library: deleted data makes room for metadata"
rw_mkfs "$IMG" 256M kernel
chunks() { btrfs inspect-internal dump-tree -t chunk "$IMG" | grep -c "CHUNK_ITEM"; }
lib "fill with 1 MiB files until ENOSPC, then delete them all" <<'EOF'
mkdir /big
fill /big 1048576
sync
rmtree /big
sync
EOF
rw_check "$IMG" "data filled and deleted"
chunks_after=$(chunks)
lib "small inline files until ENOSPC on the emptied filesystem" <<'EOF'
mkdir /small
fill /small 2000
sync
EOF
read -r nsmall3 _ <<<"$(filled)"
rw_log "$nsmall3 small files (a fresh image took $nsmall); $chunks_after chunks after the deletion"
((nsmall3 * 10 >= nsmall * 9)) && rw_ok "the space of deleted data holds metadata again: $nsmall3 small files" ||
	rw_bad "only $nsmall3 small files fit after deleting the data (a fresh image took $nsmall)"
rw_check "$IMG" "metadata full after the data was deleted"
rw_kmount "$IMG" "$KMNT"
n=$(find "$KMNT/small" -type f | wc -l)
rm -rf "$KMNT/small" && echo kernel >"$KMNT/k" && rw_ok "the kernel lists the $n files, deletes them and writes" ||
	rw_bad "the kernel could not delete and write"
rw_kumount "$KMNT"
((n == nsmall3)) || rw_bad "the kernel sees $n files, not $nsmall3"
rw_check "$IMG" "after the kernel's changes"

# ---- FUSE ----
rw_log "=== FUSE"
rw_mkfs "$IMG" 256M kernel
rw_fmount "$IMG" "$MNT"
fuse_avail() { echo $(($(stat -f -c '%a * %S' "$MNT"))); }
# A commit: fsync of a directory (libfuse 3.14 has no syncfs, so sync(1) does not reach ubtrfs).
fuse_commit() { python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd)' "$MNT"; }
before=$(fuse_avail)
if dd if=/dev/urandom of="$MNT/big" bs=1M status=none 2>"$RW_TMP/dd.err"; then
	rw_bad "dd filled 256 MiB without an error"
else
	grep -q "No space left on device" "$RW_TMP/dd.err" && rw_ok "dd: $(head -n 1 "$RW_TMP/dd.err")" ||
		rw_bad "dd failed otherwise: $(cat "$RW_TMP/dd.err")"
fi
big=$(stat -c %s "$MNT/big")
echo "still writable" >"$MNT/after" && rw_ok "the mount is still writable" || rw_bad "no write after ENOSPC"
fuse_commit
full=$(fuse_avail)
rw_log "df: $((before / MiB)) MiB available before, $((full / MiB)) MiB when full, big file $((big / MiB)) MiB"
((full < 4 * MiB)) && rw_ok "df shows the filesystem full" || rw_bad "df shows $((full / MiB)) MiB available when full"
rm "$MNT/big"
# No commit in between: the write must get the space the removal freed (pinned until a commit).
if dd if=/dev/urandom of="$MNT/again" bs=1M count=100 status=none 2>"$RW_TMP/dd.err"; then
	rw_ok "wrote 100 MiB right after rm, without a commit"
else
	rw_bad "writing right after rm: $(cat "$RW_TMP/dd.err")"
fi
fuse_commit
freed=$(fuse_avail)
((freed > big - 100 * MiB - 8 * MiB)) && rw_ok "df shows $((freed / MiB)) MiB available after rm and a commit" ||
	rw_bad "df shows $((freed / MiB)) MiB after removing $((big / MiB)) MiB and writing 100 MiB"
python3 - "$MNT/small" >"$RW_TMP/small.out" 2>&1 <<'EOF' || rw_bad "small files through FUSE: $(tail -n 3 "$RW_TMP/small.out")"
import errno, os, sys
d = sys.argv[1]
os.mkdir(d)
n = 0
while True:
    try:
        fd = os.open("%s/f%06d" % (d, n), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            os.write(fd, b"s" * 2000)
        finally:
            os.close(fd)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        break
    n += 1
print("small files until ENOSPC:", n)
EOF
rw_log "$(tail -n 1 "$RW_TMP/small.out")"
rm -rf "$MNT/small" 2>"$RW_TMP/rm.err" && rw_ok "rm -rf of the small files on the full mount" ||
	{ rw_bad "rm -rf on the full mount: $(head -n 3 "$RW_TMP/rm.err")"; }
fuse_commit
echo "after" >"$MNT/after2" || rw_bad "no write after emptying"
rw_fumount "$MNT"
rw_check "$IMG" "after the FUSE round"
rw_kmount "$IMG" "$KMNT" ro
[[ -f $KMNT/again && $(stat -c %s "$KMNT/again") -eq $((100 * MiB)) && ! -e $KMNT/small ]] &&
	rw_ok "the kernel sees the result" || rw_bad "the kernel sees: $(ls -la "$KMNT")"
rw_kumount "$KMNT"
# ---- FUSE with the kernel's writeback cache ----
# The kernel accepts writes before ubtrfs sees them: no write(2) can be refused for space, the
# data goes in without a reservation (as mapped pages do) and ENOSPC must reach fsync.
rw_log "=== FUSE -o writeback_cache"
rw_mkfs "$IMG" 256M kernel
rw_fmount "$IMG" "$MNT" writeback_cache
if dd if=/dev/urandom of="$MNT/big" bs=1M count=400 conv=fsync status=none 2>"$RW_TMP/dd.err"; then
	rw_bad "dd + fsync of 400 MiB into 256 MiB reported no error"
else
	grep -q "No space left on device" "$RW_TMP/dd.err" && rw_ok "writeback cache: $(head -n 1 "$RW_TMP/dd.err")" ||
		rw_bad "dd failed otherwise: $(cat "$RW_TMP/dd.err")"
fi
rm "$MNT/big"
fuse_commit
if dd if=/dev/urandom of="$MNT/again" bs=1M count=100 conv=fsync status=none 2>"$RW_TMP/dd.err"; then
	rw_ok "writeback cache: 100 MiB written and fsync'd after rm"
else
	rw_bad "writeback cache: writing after rm: $(cat "$RW_TMP/dd.err")"
fi
sum=$(md5sum <"$MNT/again")
rw_fumount "$MNT"
rw_check "$IMG" "after the writeback-cache round"
rw_kmount "$IMG" "$KMNT" ro
[[ $(md5sum <"$KMNT/again") == "$sum" && ! -e $KMNT/big ]] && rw_ok "the kernel reads the fsync'd file" ||
	rw_bad "the kernel sees: $(ls -la "$KMNT")"
rw_kumount "$KMNT"

rw_finish
