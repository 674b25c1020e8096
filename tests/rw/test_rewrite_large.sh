#!/bin/bash
# test_rewrite_large.sh — the sequence that once aborted a transaction (EUCLEAN while finishing an
# ordered extent: a checksum item at the first slot of a full leaf could not be extended): through
# a `ubtrfs mount` on 4 KiB nodes (many checksum leaves), a large file written sequentially and
# fsync'd, a remount, a full read, its removal, then a file laid out in 4 KiB writes and
# overwritten at random 4 KiB offsets, fsync'd. Every byte is compared with a model, the daemon
# log must hold no error, `btrfs check` passes and the kernel reads the same bytes.
#
# UBT_SOAK=1: 1 GiB instead of 256 MiB, and more random writes.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
rw_init rewrite-large

IMG=$RW_TMP/img
MNT=$RW_TMP/mnt
KMNT=$RW_TMP/kmnt
SEQ_MIB=256 RAND_MIB=64 RAND_WRITES=20000
if [[ -n ${UBT_SOAK:-} ]]; then
	SEQ_MIB=1024 RAND_MIB=256 RAND_WRITES=100000
fi
fsync_dir() { python3 -c 'import os, sys; os.fsync(os.open(sys.argv[1], os.O_RDONLY))' "$1"; }

rw_mkfs "$IMG" $((SEQ_MIB * 2 + 512))M ubtrfs -n 4096
rw_fmount "$IMG" "$MNT"
head -c $((SEQ_MIB << 20)) /dev/urandom >"$RW_TMP/seq.src"
dd if="$RW_TMP/seq.src" of="$MNT/seq.dat" bs=1M conv=fsync status=none && rw_ok "wrote $SEQ_MIB MiB sequentially, fsync'd" ||
	rw_bad "sequential write"
rw_fumount "$MNT"
rw_fmount "$IMG" "$MNT"
cmp "$RW_TMP/seq.src" "$MNT/seq.dat" && rw_ok "read back after a remount: identical" || rw_bad "sequential file differs"
rm "$MNT/seq.dat" "$RW_TMP/seq.src"
# Laid out in 4 KiB writes, then overwritten at random offsets; the model is a file beside it.
if python3 - "$MNT/rand.dat" "$RW_TMP/rand.model" "$RAND_MIB" "$RAND_WRITES" <<'PY'; then
import os, random, sys
path, model, mib, nwrites = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
size = mib << 20
rng = random.Random(7)
fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
md = os.open(model, os.O_CREAT | os.O_WRONLY, 0o644)
for off in range(0, size, 4096):
    b = rng.randbytes(4096)
    os.pwrite(fd, b, off)
    os.pwrite(md, b, off)
os.fsync(fd)
for _ in range(nwrites):
    off = rng.randrange(size // 4096) * 4096
    b = rng.randbytes(4096)
    os.pwrite(fd, b, off)
    os.pwrite(md, b, off)
os.fsync(fd)
os.close(fd)
os.close(md)
PY
	rw_ok "laid out $RAND_MIB MiB in 4 KiB writes, $RAND_WRITES random overwrites, fsync'd"
else
	rw_bad "random-write phase"
fi
cmp "$RW_TMP/rand.model" "$MNT/rand.dat" && rw_ok "the random-written file matches its model" || rw_bad "random-written file differs"
fsync_dir "$MNT"
if grep -E ": (error|warning):" "$RW_TMP/daemon.log" >"$RW_TMP/daemon.err"; then
	rw_bad "the daemon logged: $(head -n 3 "$RW_TMP/daemon.err")"
else
	rw_ok "no error or warning in the daemon's log"
fi
rw_fumount "$MNT"
rw_check "$IMG" "after the rewrite sequence"
rw_kmount "$IMG" "$KMNT" ro
cmp "$RW_TMP/rand.model" "$KMNT/rand.dat" && rw_ok "the kernel reads the same bytes" || rw_bad "the kernel reads other bytes"
[[ ! -e $KMNT/seq.dat ]] || rw_bad "the removed file is back under the kernel"
rw_kumount "$KMNT"
rw_finish
