#!/usr/bin/env bash
# Corruption handling, checked against the kernel's btrfs on the same damaged image.
#
# (a) data: one 4 KiB block of a kernel-written file gets one byte changed on disk. Reading that
#     block through the FUSE mount and through the library fails with EIO; every other block
#     reads back intact; other files are unaffected.
# (b) metadata: the fs-tree leaf holding a unique file name (metadata is DUP) gets one byte
#     changed in one copy: everything still reads correctly from the other mirror. Then in both
#     copies: that directory fails cleanly (EIO or EUCLEAN), nothing crashes, the daemon keeps
#     serving the other directories, and unmounting works.
#
# No timing assumptions: every wait polls a condition (see lib.sh).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
source "$here/../compat/lib.sh"

ubt_require_root_fuse
ubt_find_tools
ubt_init corrupt
ubt_sanitizer_env
command -v btrfs-map-logical >/dev/null || ubt_die "btrfs-map-logical (btrfs-progs) is needed"

T=$UBT_TMP
BS=4096
NBLOCKS=64
BAD=37

# block_content I: the 4 KiB content of block I of the marker file (unique per block).
block_content() {
	local s
	s=$(printf 'UBTMARK-BLOCK-%06d-' "$1")
	while ((${#s} < BS)); do s=$s$s; done
	printf '%s' "${s:0:BS}"
}

# flip_byte FILE OFFSET: change one byte (xor 0x5a) in place.
flip_byte() {
	local f=$1 off=$2 old new
	old=$(od -An -tu1 -j "$off" -N1 "$f" | tr -d ' ')
	new=$((old ^ 0x5a))
	printf "\\$(printf '%03o' "$new")" | dd of="$f" bs=1 seek="$off" conv=notrunc status=none
	[[ $(od -An -tu1 -j "$off" -N1 "$f" | tr -d ' ') == "$new" ]] || ubt_die "could not change byte at $off of $f"
}

# is_io_error LOG: the failure logged in LOG is EIO or EUCLEAN.
is_io_error() {
	grep -qE 'Input/output error|Structure needs cleaning|EIO|EUCLEAN|I/O error' "$1"
}

# run_status OUT ERR CMD...: run CMD with stdout to OUT and stderr to ERR, print its exit
# status (never fails under set -e).
run_status() {
	local out=$1 err=$2 rc=0
	shift 2
	"$@" >"$out" 2>"$err" || rc=$?
	echo "$rc"
}

# ======================================================================================
echo "== (a) data block checksum mismatch"
img=$T/data.img
truncate -s 256M "$img"
mkfs.btrfs -q -f "$img" >/dev/null
for ((i = 0; i < NBLOCKS; i++)); do block_content "$i"; done >"$T/marker.expected"
head -c 300000 /dev/urandom >"$T/other.expected"
kmount "$img" "$T/k"
cp "$T/marker.expected" "$T/k/marker.bin"
cp "$T/other.expected" "$T/k/other.bin"
mkdir "$T/k/dir"
printf 'small inline file\n' >"$T/k/dir/small"
kumount "$T/k"

marker="UBTMARK-BLOCK-$(printf '%06d' $BAD)-"
mapfile -t offs < <(grep -obUaF "$marker" "$img" | cut -d: -f1)
per_block=$((BS / ${#marker}))
[[ ${#offs[@]} -eq $per_block ]] ||
	ubt_die "expected the marker of block $BAD exactly $per_block times in the image (one copy), found ${#offs[@]}"
phys=${offs[0]}
((phys % BS == 0)) || ubt_die "block $BAD found at unaligned offset $phys"
echo "block $BAD of marker.bin is at physical offset $phys"
flip_byte "$img" $((phys + 1000))

# The oracle agrees the block is bad (and only that block).
kmount "$img" "$T/k" ro
rc=$(run_status /dev/null /dev/null dd if="$T/k/marker.bin" of=/dev/null bs=$BS skip=$BAD count=1 iflag=direct status=none)
[[ $rc -ne 0 ]] || ubt_die "kernel: reading the corrupted block succeeded; test setup is wrong"
dd if="$T/k/marker.bin" bs=$BS skip=$((BAD + 1)) count=1 iflag=direct status=none |
	cmp -s - <(block_content $((BAD + 1))) || ubt_die "kernel: block $((BAD + 1)) does not read back"
kumount "$T/k"

# check_blocks WHAT READER: READER BLOCK writes that block to stdout or fails.
check_blocks() {
	local what=$1 reader=$2 b rc
	for b in 0 1 $((BAD - 1)) $((BAD + 1)) $((NBLOCKS - 1)); do
		if ! "$reader" "$b" >"$T/blk.out" 2>"$T/blk.err"; then
			cat "$T/blk.err" >&2
			ubt_die "$what: reading good block $b of marker.bin failed"
		fi
		cmp -s "$T/blk.out" <(block_content "$b") || ubt_die "$what: block $b of marker.bin reads back wrong"
	done
	rc=$(run_status "$T/blk.out" "$T/blk.err" "$reader" $BAD)
	[[ $rc -ne 0 ]] || ubt_die "$what: reading the corrupted block $BAD succeeded (got $(head -c 40 "$T/blk.out" | tr -c '[:print:]' .))"
	((rc < 128)) || ubt_die "$what: reader killed by signal $((rc - 128))"
	is_io_error "$T/blk.err" || { cat "$T/blk.err" >&2; ubt_die "$what: block $BAD did not fail with EIO"; }
	[[ ! -s $T/blk.out ]] || ubt_die "$what: data returned for the corrupted block"
	echo "$what: block $BAD fails with EIO, the others read back"
}

fuse_block() { dd if="$T/f/marker.bin" bs=$BS skip="$1" count=1 status=none; }
fuse_block_direct() { dd if="$T/f/marker.bin" bs=$BS skip="$1" count=1 iflag=direct status=none; }
lib_block() { "$MANIFEST" cat "$img" /marker.bin $(($1 * BS)) $BS; }

fmount "$img" "$T/f" || ubt_die "ubtrfs mount of the data-corrupted image failed"
check_blocks "FUSE (buffered)" fuse_block
# Buffered reads again, after the failure (nothing bad may have been cached).
check_blocks "FUSE (buffered, again)" fuse_block
if dd if="$T/f/other.bin" of=/dev/null bs=$BS count=1 iflag=direct status=none 2>/dev/null; then
	check_blocks "FUSE (O_DIRECT)" fuse_block_direct
else
	echo "FUSE: O_DIRECT reads not supported, skipped"
fi
rc=$(run_status /dev/null "$T/cat.err" cat "$T/f/marker.bin")
[[ $rc -ne 0 ]] && is_io_error "$T/cat.err" || ubt_die "FUSE: reading the whole file did not fail with EIO"
cmp "$T/f/other.bin" "$T/other.expected" || ubt_die "FUSE: other.bin differs"
[[ $(cat "$T/f/dir/small") == "small inline file" ]] || ubt_die "FUSE: dir/small differs"
mountpoint -q "$T/f" || ubt_die "FUSE: the daemon went away after the read errors"
fumount "$T/f" || ubt_die "FUSE: unmount after read errors failed"

check_blocks "library" lib_block
rc=$(run_status /dev/null "$T/lib.err" "$MANIFEST" lib "$img")
((rc > 0 && rc < 128)) || ubt_die "manifest lib on the damaged image: exit status $rc, expected a clean failure"
grep -q 'marker.bin' "$T/lib.err" && is_io_error "$T/lib.err" ||
	{ cat "$T/lib.err" >&2; ubt_die "manifest lib: the error does not name marker.bin with EIO"; }
"$MANIFEST" cat "$img" /other.bin | cmp -s - "$T/other.expected" || ubt_die "library: other.bin differs"

# ======================================================================================
echo "== (b) metadata: leaf with a unique name, one mirror then both"
img=$T/meta.img
victim=UBTVICTIM_c0ffee_unique_name
truncate -s 256M "$img"
mkfs.btrfs -q -f -m dup "$img" >/dev/null
kmount "$img" "$T/k"
mkdir "$T/k/other"
for i in $(seq 1 10); do printf 'other file %d\n' "$i" >"$T/k/other/o_$i"; done
head -c 200000 /dev/urandom >"$T/k/other/big"
mkdir "$T/k/filler"
(cd "$T/k/filler" && seq -f 'filler_file_with_a_longish_name_%05g' 1 3000 | xargs touch)
mkdir "$T/k/victim"
printf 'victim content\n' >"$T/k/victim/$victim"
printf 'neighbour\n' >"$T/k/victim/neighbour"
# More inodes after the victim: the kernel reads the fs tree's last leaf at mount (highest
# inode number), which must not be the damaged one.
mkdir "$T/k/trailer"
(cd "$T/k/trailer" && seq -f 'trailer_file_with_a_longish_name_%05g' 1 1500 | xargs touch)
kumount "$T/k"

kmount "$img" "$T/k" ro
"$MANIFEST" dir "$T/k" >"$T/meta.kernel"
"$MANIFEST" dir "$T/k/other" >"$T/other.kernel"
kumount "$T/k"

# Leaves of the fs tree that hold the name; the leaves of "other" must not be among them.
dump() { btrfs inspect-internal dump-tree -t 5 "$img"; }
leaves_with() { dump | awk -v n="name: $1" '/^leaf [0-9]+ items/ { l = $2 } index($0, n) { print l }' | sort -u; }
mapfile -t leaves < <(leaves_with "$victim")
mapfile -t other_leaves < <(leaves_with o_1; leaves_with trailer_file_with_a_longish_name_01500)
[[ ${#leaves[@]} -ge 1 ]] || ubt_die "no fs-tree leaf holds $victim"
[[ ${#other_leaves[@]} -ge 1 ]] || ubt_die "no fs-tree leaf holds other/o_1"
for l in "${leaves[@]}"; do
	for o in "${other_leaves[@]}"; do
		[[ $l != "$o" ]] || ubt_die "setup: $victim shares leaf $l with other/ or the last leaf"
	done
done
echo "leaves holding $victim: ${leaves[*]}"

# mirrors LOGICAL: physical offsets of both copies; each checked to hold that tree block.
declare -a copies1=() copies2=()
for l in "${leaves[@]}"; do
	mapfile -t ph < <(btrfs-map-logical -l "$l" "$img" | awk '/^mirror/ { print $6 }')
	[[ ${#ph[@]} -eq 2 ]] || ubt_die "leaf $l: expected 2 mirrors (DUP), got ${#ph[@]}"
	for p in "${ph[@]}"; do
		hdr=$(od -An -tu8 -j $((p + 48)) -N8 "$img" | tr -d ' ')
		[[ $hdr == "$l" ]] || ubt_die "leaf $l: block at physical $p has bytenr $hdr"
		# The name must be inside this copy: flip one of its bytes.
		noff=$(dd if="$img" bs=1 skip="$p" count=16384 status=none | grep -obUaF "$victim" | head -n1 | cut -d: -f1 || true)
		[[ -n $noff ]] || noff=200
		if [[ $p == "${ph[0]}" ]]; then
			copies1+=($((p + noff + 3)))
		else
			copies2+=($((p + noff + 3)))
		fi
	done
done

# One mirror bad: the other is used, everything reads back as the kernel wrote it.
for off in "${copies1[@]}"; do flip_byte "$img" "$off"; done
fmount "$img" "$T/f" || ubt_die "ubtrfs mount with one bad metadata mirror failed"
"$MANIFEST" dir "$T/f" >"$T/meta.fuse1" 2>"$T/meta.fuse1.err" ||
	{ cat "$T/meta.fuse1.err" >&2; ubt_die "FUSE: manifest failed with one bad mirror"; }
fumount "$T/f" || ubt_die "FUSE: unmount failed"
cmp -s "$T/meta.kernel" "$T/meta.fuse1" ||
	{ diff -u "$T/meta.kernel" "$T/meta.fuse1" | head -n 40 >&2; ubt_die "FUSE: tree differs from the kernel's with one bad metadata mirror"; }
"$MANIFEST" lib "$img" >"$T/meta.lib1" 2>"$T/meta.lib1.err" ||
	{ cat "$T/meta.lib1.err" >&2; ubt_die "library: manifest failed with one bad mirror"; }
cmp -s "$T/meta.kernel" "$T/meta.lib1" ||
	{ diff -u "$T/meta.kernel" "$T/meta.lib1" | head -n 40 >&2; ubt_die "library: tree differs with one bad mirror"; }
echo "one bad mirror: FUSE and library read everything from the good copy"

# Both mirrors bad.
for off in "${copies2[@]}"; do flip_byte "$img" "$off"; done
kmount "$img" "$T/k" ro
rc=$(run_status /dev/null /dev/null ls -l "$T/k/victim")
kumount "$T/k"
[[ $rc -ne 0 ]] || ubt_die "kernel: victim/ still lists with both mirrors bad; test setup is wrong"

fmount "$img" "$T/f" || ubt_die "ubtrfs mount with both metadata mirrors bad failed"
dpids=${UBT_FMOUNT_DPIDS[$T/f]}
rc=$(run_status /dev/null "$T/ls.err" ls -l "$T/f/victim")
[[ $rc -ne 0 ]] || ubt_die "FUSE: victim/ lists with both mirrors bad"
is_io_error "$T/ls.err" || { cat "$T/ls.err" >&2; ubt_die "FUSE: victim/ did not fail with EIO/EUCLEAN"; }
echo "FUSE: victim/ fails: $(head -n1 "$T/ls.err")"
rc=$(run_status /dev/null "$T/cat.err" cat "$T/f/victim/$victim")
[[ $rc -ne 0 ]] && is_io_error "$T/cat.err" || ubt_die "FUSE: reading victim/$victim did not fail with EIO/EUCLEAN"
mountpoint -q "$T/f" || ubt_die "FUSE: the mount went away after the metadata errors"
[[ -z $dpids ]] || ! ubt_pids_gone "$dpids" || ubt_die "FUSE: the daemon died after the metadata errors"
"$MANIFEST" dir "$T/f/other" >"$T/other.fuse" || ubt_die "FUSE: other/ no longer readable"
cmp -s "$T/other.kernel" "$T/other.fuse" ||
	{ diff -u "$T/other.kernel" "$T/other.fuse" | head -n 40 >&2; ubt_die "FUSE: other/ differs after the errors"; }
ls "$T/f" >/dev/null || ubt_die "FUSE: the root no longer lists"
# The same failure again: errors are not cached as successes, nor the daemon wedged.
rc=$(run_status /dev/null /dev/null ls -l "$T/f/victim")
[[ $rc -ne 0 ]] || ubt_die "FUSE: victim/ lists on the second try"
fumount "$T/f" || ubt_die "FUSE: unmount failed after metadata errors"
echo "FUSE: clean errors for victim/, other/ still served, unmount works"

rc=$(run_status /dev/null "$T/lib.err" "$MANIFEST" lib "$img")
((rc > 0 && rc < 128)) || { cat "$T/lib.err" >&2; ubt_die "manifest lib: exit status $rc, expected a clean failure"; }
is_io_error "$T/lib.err" || { cat "$T/lib.err" >&2; ubt_die "manifest lib: not an EIO/EUCLEAN failure"; }
"$MANIFEST" lib "$img" --root /other >"$T/other.lib" ||
	ubt_die "library: other/ no longer readable"
cmp -s "$T/other.kernel" "$T/other.lib" || ubt_die "library: other/ differs after the errors"
echo "library: clean error ($(grep -m1 "^manifest:" "$T/lib.err" || head -n1 "$T/lib.err")), other/ still readable"

ubt_check_sanitizer
echo "corrupt: all checks passed"
