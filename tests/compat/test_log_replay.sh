#!/usr/bin/env bash
# test_log_replay — btrfs's fsync log replayed by ubtrfs, compared with the kernel's own replay.
#
# For each scenario: mkfs.btrfs a 512 MiB image, mount it with the kernel (commit=300 so no
# transaction commits on its own), commit a starting state (sync -f), do the scenario's changes
# with fsync/fdatasync, then copy the image while it is still mounted: the copy is what a crash
# leaves, with super.log_root != 0 (checked with dump-super). Then:
#   - the kernel replays one copy (a loop mount) and `manifest dir` describes the result;
#   - ubtrfs replays another copy (a read-write library mount, tests/tools/ubt_mount_rw), which
#     must then have log_root 0, pass `btrfs check --readonly`, and give the same manifest through
#     the library and through a kernel mount of it (atime, ctime and inode numbers are not compared).
# Also: a read-only ubtrfs mount replays the log in memory only (same view, image unchanged), and
# a read-write mount with nologreplay is refused.
#
# Environment: UBT_BUILD_DIR, UBT_TOOLS_DIR, UBT_SRC_DIR, UBTRFS_BIN (CTest sets them);
# UBT_SCENARIOS="a b" runs a subset; UBT_KEEP_TMP=1 keeps the temp dir.
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
	echo "SKIP: needs root"
	exit 0
fi
source "$(dirname "$0")/lib.sh"
ubt_find_tools
ubt_init log-replay
ubt_sanitizer_env
MOUNT_RW=$UBT_TOOLS_DIR/ubt_mount_rw
[[ -x $MOUNT_RW ]] || ubt_die "ubt_mount_rw not built: $MOUNT_RW"
grep -qw btrfs /proc/filesystems || modprobe btrfs 2>/dev/null || true

# fsync_py MODE PATH...: fsync (or fdatasync) each PATH (files or directories).
fsync_py() {
	local mode=$1
	shift
	python3 - "$mode" "$@" <<'EOF'
import os, sys
mode = sys.argv[1]
for p in sys.argv[2:]:
    fd = os.open(p, os.O_RDONLY)
    (os.fdatasync if mode == "data" else os.fsync)(fd)
    os.close(fd)
EOF
}

# write_py PATH OFFSET LENGTH SEED [trunc]: write LENGTH pseudo-random bytes at OFFSET.
write_py() {
	python3 - "$@" <<'EOF'
import os, random, sys
path, off, length, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if len(sys.argv) > 5 else 0)
fd = os.open(path, flags, 0o644)
data = random.Random(seed).randbytes(length)
os.pwrite(fd, data, off)
os.close(fd)
EOF
}

# ---- scenarios: setup_NAME runs before the commit, run_NAME after it (in the mount dir) ----

setup_new_files() { :; }
run_new_files() {
	write_py small 0 100 1
	write_py medium 0 $((100 * 1024)) 2
	write_py large 0 $((3 * 1024 * 1024)) 3
	write_py sparse $((1024 * 1024)) 5000 4
	fsync_py full small medium large sparse
}

setup_append_overwrite() {
	write_py app 0 $((64 * 1024)) 10
	write_py over 0 $((512 * 1024)) 11
	write_py shrink 0 $((256 * 1024)) 12
	write_py tiny 0 50 13
}
run_append_overwrite() {
	write_py app $((64 * 1024)) $((200 * 1024 + 123)) 20
	write_py over $((100 * 1024)) $((8 * 1024)) 21
	truncate -s $((10 * 1024 + 7)) shrink
	write_py tiny 50 30 23
	fsync_py full app over shrink tiny
}

setup_rename_unlink() {
	mkdir d
	for n in x y z w; do write_py "d/$n" 0 $((4096 + ${#n})) 30; done
}
run_rename_unlink() {
	mv d/x d/x2
	rm d/y
	mv d/z d/w # replaces w
	touch d/new
	fsync_py full d
}

setup_fdatasync() {
	write_py old 0 $((32 * 1024)) 40
}
run_fdatasync() {
	write_py old $((8 * 1024)) $((40 * 1024)) 41
	write_py fresh 0 $((20 * 1024)) 42
	fsync_py data old fresh
}

setup_hardlinks() {
	mkdir sub
	write_py keep 0 5000 50
}
run_hardlinks() {
	write_py f 0 9000 51
	ln f g
	ln f sub/h
	ln keep sub/keep2
	fsync_py full f keep
}

setup_new_dir() { :; }
run_new_dir() {
	mkdir -p nd/inner
	write_py nd/a 0 $((12 * 1024)) 60
	write_py nd/inner/b 0 300 61
	ln -s a nd/link
	fsync_py full nd/a nd/inner/b nd/inner nd
}

setup_xattrs() {
	write_py xold 0 1000 70
	setfattr -n user.gone -v bye xold
	setfattr -n user.kept -v old xold
}
run_xattrs() {
	write_py xnew 0 2000 71
	setfattr -n user.a -v alpha xnew
	setfattr -n user.big -v "$(head -c 3000 /dev/zero | tr '\0' 'v')" xnew
	setfattr -x user.gone xold
	setfattr -n user.kept -v new xold
	setfattr -n user.added -v 1 xold
	fsync_py full xnew xold
}

setup_unlink() {
	write_py a 0 7000 80
	ln a b
	mkdir dd
	write_py dd/victim 0 20000 81
	write_py dd/stay 0 100 82
}
run_unlink() {
	rm b
	fsync_py full a
	rm dd/victim
	fsync_py full dd
}

setup_multi_fsync() { write_py m 0 $((256 * 1024)) 90; }
run_multi_fsync() {
	write_py m $((16 * 1024)) $((64 * 1024)) 91
	fsync_py full m
	write_py m $((32 * 1024)) 4096 92
	write_py n 0 3000 93
	fsync_py full m n
	write_py m $((300 * 1024)) $((100 * 1024)) 94
	write_py n 0 9000 95
	fsync_py data m n
}

MOUNT_OPTS_compressed="compress-force=zstd"
setup_compressed() { :; }
run_compressed() {
	python3 -c 'import sys; sys.stdout.write("compressible line of text\n" * 40000)' >c1
	python3 -c 'import random, sys; sys.stdout.buffer.write(random.Random(7).randbytes(4096) * 75)' >c2
	fsync_py full c1 c2
}

setup_prealloc() { write_py p_old 0 8192 110; }
run_prealloc() {
	fallocate -l $((1024 * 1024)) p_new
	write_py p_new 4096 10000 111
	fallocate -n -o 8192 -l $((256 * 1024)) p_old
	write_py p_old 0 100 112
	fsync_py full p_new p_old
}

setup_many_files() { mkdir big; }
run_many_files() {
	local i
	for i in $(seq 1 400); do
		printf 'file number %d with a longer name for bigger items\n' "$i" >"big/entry-with-a-long-name-$i"
	done
	write_py big/huge 0 $((24 * 1024 * 1024)) 120
	fsync_py full big big/huge big/entry-with-a-long-name-*
}

setup_subvolume() {
	btrfs -q subvolume create sv
	write_py sv/old 0 5000 130
}
run_subvolume() {
	write_py sv/new 0 40000 131
	write_py sv/old 5000 5000 132
	write_py top 0 1000 133
	fsync_py full sv/new sv/old top
}

ALL_SCENARIOS="new_files append_overwrite rename_unlink fdatasync hardlinks new_dir xattrs unlink multi_fsync
compressed prealloc many_files subvolume"
npass=0
failures=()

fail() {
	failures+=("$1: $2")
	ubt_msg "FAIL $1: $2"
}

log_root_of() {
	btrfs inspect-internal dump-super "$1" | awk '$1 == "log_root" { print $2 }'
}

# make_crash_image NAME IMG: the scenario's image with a log tree (a few tries: something may
# commit the transaction, e.g. an fsync the kernel turns into a full commit).
make_crash_image() {
	local name=$1 img=$2 mnt=$UBT_TMP/$1/kmnt try
	for try in 1 2 3; do
		rm -f "$img"
		truncate -s 512M "$img"
		mkfs.btrfs -q -f "$img" >/dev/null
		local extra_var=MOUNT_OPTS_$name
		kmount "$img" "$mnt" "commit=300${!extra_var:+,${!extra_var}}"
		(cd "$mnt" && "setup_$name")
		sync -f "$mnt"
		(cd "$mnt" && "run_$name")
		cp --sparse=always "$img" "$img.crash"
		kumount "$mnt"
		if [[ $(log_root_of "$img.crash") != 0 ]]; then
			mv "$img.crash" "$img"
			return 0
		fi
		rm -f "$img.crash"
	done
	return 1
}

scenario() {
	local name=$1 t=$UBT_TMP/$1
	mkdir -p "$t"
	if ! make_crash_image "$name" "$t/crash.img"; then
		fail "$name" "no log tree in the copied image after 3 tries"
		return
	fi
	cp --sparse=always "$t/crash.img" "$t/kernel.img"
	cp --sparse=always "$t/crash.img" "$t/ubt.img"

	# The oracle: the kernel's replay.
	kmount "$t/kernel.img" "$t/kmnt"
	"$MANIFEST" dir "$t/kmnt" >"$t/kernel.txt"
	kumount "$t/kmnt"

	# The log must matter: the last commit alone (nologreplay) looks different.
	"$MANIFEST" lib "$t/crash.img" --nologreplay >"$t/last-commit.txt" 2>/dev/null || true
	if cmp -s "$t/kernel.txt" "$t/last-commit.txt"; then
		fail "$name" "the kernel's replay changed nothing: the scenario does not exercise the log"
		return
	fi

	# ubtrfs: read-only replays in memory (the image is untouched), rw + nologreplay is refused,
	# rw replays for good.
	local before
	before=$(md5sum <"$t/ubt.img")
	if ! "$MANIFEST" lib "$t/ubt.img" >"$t/ro.txt" 2>"$t/ro.err"; then
		fail "$name" "read-only in-memory replay failed: $(head -c 800 "$t/ro.err")"
		return
	fi
	if ! cmp -s "$t/kernel.txt" "$t/ro.txt"; then
		fail "$name" "the read-only (in-memory) replay differs from the kernel's:
$(diff -u --label kernel --label ubtrfs-ro "$t/kernel.txt" "$t/ro.txt" | head -n 40)"
		return
	fi
	if [[ $(md5sum <"$t/ubt.img") != "$before" ]]; then
		fail "$name" "a read-only mount changed the image"
		return
	fi
	if "$MOUNT_RW" "$t/ubt.img" --nologreplay 2>"$t/rwnlr.err"; then
		fail "$name" "a read-write mount with nologreplay was not refused"
		return
	fi
	if ! "$MOUNT_RW" "$t/ubt.img" 2>"$t/replay.err"; then
		fail "$name" "ubtrfs replay failed: $(head -c 800 "$t/replay.err")"
		return
	fi
	if [[ $(log_root_of "$t/ubt.img") != 0 ]]; then
		fail "$name" "log_root still set after ubtrfs replayed the log"
		return
	fi
	if ! btrfs check --readonly "$t/ubt.img" >"$t/check.out" 2>&1; then
		fail "$name" "btrfs check failed after ubtrfs replay: $(grep -v '^\[' "$t/check.out" | head -n 20)"
		return
	fi
	if ! "$MANIFEST" lib "$t/ubt.img" >"$t/ubt.txt" 2>"$t/ubt.err"; then
		fail "$name" "manifest lib after replay failed: $(head -c 600 "$t/ubt.err")"
		return
	fi
	if ! cmp -s "$t/kernel.txt" "$t/ubt.txt"; then
		fail "$name" "ubtrfs replay differs from the kernel's:
$(diff -u --label kernel --label ubtrfs "$t/kernel.txt" "$t/ubt.txt" | head -n 40)"
		return
	fi
	# The kernel reads ubtrfs's result back the same way.
	kmount "$t/ubt.img" "$t/kmnt2" ro
	"$MANIFEST" dir "$t/kmnt2" >"$t/ubt-kernel.txt"
	kumount "$t/kmnt2"
	if ! cmp -s "$t/kernel.txt" "$t/ubt-kernel.txt"; then
		fail "$name" "the kernel reads ubtrfs's replay differently:
$(diff -u --label kernel --label ubtrfs-by-kernel "$t/kernel.txt" "$t/ubt-kernel.txt" | head -n 40)"
		return
	fi
	npass=$((npass + 1))
	echo "PASS $name ($(wc -l <"$t/kernel.txt") entries)"
	[[ -n ${UBT_KEEP_TMP:-} ]] || rm -f "$t"/*.img
}

for s in ${UBT_SCENARIOS:-$ALL_SCENARIOS}; do
	scenario "$s"
done
ubt_check_sanitizer

echo "log replay: $npass passed, ${#failures[@]} failed"
if [[ ${#failures[@]} -gt 0 ]]; then
	printf '  %s\n' "${failures[@]}" | cut -c1-3000 >&2
	exit 1
fi
