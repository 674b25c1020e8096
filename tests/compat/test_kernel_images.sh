#!/usr/bin/env bash
# Compare ubtrfs with the kernel's btrfs on kernel-written images.
#
# For each image from make_images.sh, and for each extra mount option set it lists (subvol=,
# subvolid=): take a manifest of the kernel's read-only mount, of `ubtrfs mount -o ro`, and of
# the library directly (`manifest lib`), and diff them. Every image is tried; the test fails at
# the end if any comparison did, showing the diffs. Manifests of failures are kept in
# $UBT_BUILD_DIR/test-artifacts/compat/.
#
# Environment: UBTRFS_BIN, UBT_TOOLS_DIR, UBT_SRC_DIR, UBT_BUILD_DIR (set by CTest);
# UBT_IMAGE_CACHE=DIR reuses images across runs (default: made fresh in the temp dir);
# UBT_IMAGES="name ..." limits the images; UBT_KEEP_TMP=1 keeps the temp dir.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"

ubt_require_root_fuse
ubt_find_tools
ubt_init compat
ubt_sanitizer_env

artifacts=$UBT_BUILD_DIR/test-artifacts/compat
rm -rf "$artifacts"
mkdir -p "$artifacts"

images=${UBT_IMAGE_CACHE:-$UBT_TMP/images}
# shellcheck disable=SC2086 # a list of names
bash "$here/make_images.sh" "$images" ${UBT_IMAGES:-}

declare -a failures=()
npass=0

# lib_args OPTS: the manifest lib arguments for a mount option set.
lib_args() {
	case $1 in
	"") ;;
	subvol=*) printf '%s\n' --subvol "${1#subvol=}" ;;
	subvolid=*) printf '%s\n' --subvolid "${1#subvolid=}" ;;
	nologreplay) printf '%s\n' --nologreplay ;;
	*) ubt_die "no library equivalent for mount option $1" ;;
	esac
}

# Files read again at pseudo-random unaligned offsets and lengths (manifest randread-*).
RANDREAD_FILES=(files/mixed_4m files/text_1m files/ow_rand files/ow_text files/reflink_mixed
	files/punched files/punched_text files/prealloc_part files/prealloc_keepsize files/sparse_big
	files/sparse_tail files/fragmented files/inline_then_hole files/inline_text_2000 files/trunc_down
	files/append files/rand_131073 files/mixed files/ow sub/dir/mixed changed)
RANDREAD_N=${UBT_RANDREAD_N:-150}

# randread_dir ROOT OUT: the random reads of every RANDREAD_FILES file under ROOT.
randread_dir() {
	local root=$1 out=$2 f
	: >"$out"
	for f in "${RANDREAD_FILES[@]}"; do
		[[ -f $root/$f ]] || continue
		echo "== $f" >>"$out"
		"$MANIFEST" randread-dir "$root/$f" "$RANDREAD_N" >>"$out" 2>"$out.err" ||
			echo "FAILED: $(grep -m1 '^manifest:' "$out.err")" >>"$out"
	done
}

# randread_lib IMG KERNEL_OUT OUT LIBARGS...: the same reads through the library, for the files
# the kernel's run listed.
randread_lib() {
	local img=$1 kout=$2 out=$3 f
	shift 3
	: >"$out"
	for f in $(sed -n 's/^== //p' "$kout"); do
		echo "== $f" >>"$out"
		"$MANIFEST" randread-lib "$img" "/$f" "$RANDREAD_N" "$@" >>"$out" 2>"$out.err" ||
			echo "FAILED: $(grep -m1 '^manifest:' "$out.err")" >>"$out"
	done
}

# kernel_opts OPTS: the kernel's spelling of a mount option set (nologreplay is a rescue= option
# there).
kernel_opts() {
	local o out=() IFS=,
	for o in $1; do
		case $o in
		nologreplay) out+=(rescue=nologreplay) ;;
		*) out+=("$o") ;;
		esac
	done
	printf '%s' "${out[*]}"
}

# Known gaps: a mount that ubtrfs refuses with one of these messages is reported as XFAIL, not
# as a failure (set UBT_STRICT=1 to fail on them too).
KNOWN_GAPS=("log replay is not supported")
declare -a xfails=()

# fail TAG MESSAGE
fail() {
	failures+=("$1: $2")
	ubt_msg "FAIL $1: $2"
}

# compare IMG OPTS
compare() {
	local img=$1 opts=$2
	local name
	name=$(basename "$img" .img)
	local tag="$name${opts:+[$opts]}"
	local t="$UBT_TMP/$name${opts:+-${opts//[^a-zA-Z0-9]/_}}"
	mkdir -p "$t"
	local ok=1

	# The oracle. It replays a log tree even on a read-only mount, writing to the image: give it
	# a copy of images that have one.
	local kimg=$img kloop=
	if [[ $name == crash-* && ,$opts, != *,nologreplay,* ]]; then
		kimg=$t/kernel-copy.img
		kloop=rwloop
		cp --sparse=always "$img" "$kimg"
	fi
	local kopts
	kopts=$(kernel_opts "$opts")
	kmount "$kimg" "$t/kmnt" "ro${kopts:+,$kopts}" $kloop
	if ! "$MANIFEST" dir "$t/kmnt" >"$t/kernel.txt" 2>"$t/kernel.err"; then
		cat "$t/kernel.err" >&2
		ubt_die "$tag: manifest of the kernel mount failed"
	fi
	randread_dir "$t/kmnt" "$t/kernel.rr"
	kumount "$t/kmnt"
	[[ $kimg == "$img" ]] || rm -f "$kimg"

	# ubtrfs through FUSE.
	if fmount "$img" "$t/fmnt" "$opts"; then
		if ! "$MANIFEST" dir "$t/fmnt" >"$t/fuse.txt" 2>"$t/fuse.err"; then
			fail "$tag" "manifest of the FUSE mount failed: $(head -c 600 "$t/fuse.err")"
			ok=0
		fi
		randread_dir "$t/fmnt" "$t/fuse.rr"
		if ! fumount "$t/fmnt"; then
			fail "$tag" "unmounting the FUSE mount failed"
			ok=0
		fi
	else
		local gap
		for gap in "${KNOWN_GAPS[@]}"; do
			if [[ -z ${UBT_STRICT:-} ]] && grep -qF "$gap" "$UBT_TMP/fmount.fmnt.log"; then
				xfails+=("$tag: ubtrfs refuses the mount: $gap")
				echo "XFAIL $tag (known gap: $gap)"
				return 0
			fi
		done
		fail "$tag" "ubtrfs mount failed: $(head -c 600 "$UBT_TMP/fmount.fmnt.log")"
		ok=0
		: >"$t/fuse.txt"
	fi

	# The library.
	local -a largs=()
	mapfile -t largs < <(lib_args "$opts")
	if ! "$MANIFEST" lib "$img" "${largs[@]}" >"$t/lib.txt" 2>"$t/lib.err"; then
		fail "$tag" "manifest lib failed: $(head -c 600 "$t/lib.err")"
		ok=0
	fi
	randread_lib "$img" "$t/kernel.rr" "$t/lib.rr" "${largs[@]}"

	local which
	for which in fuse lib; do
		if [[ -s $t/$which.txt ]] && ! cmp -s "$t/kernel.txt" "$t/$which.txt"; then
			diff -u --label "kernel $tag" --label "$which $tag" "$t/kernel.txt" "$t/$which.txt" \
				>"$t/$which.diff" || true
			fail "$tag" "$which manifest differs from the kernel's ($(grep -c '^[-+][^-+]' "$t/$which.diff") lines), first lines:
$(head -n 40 "$t/$which.diff")"
			ok=0
		fi
	done

	for which in fuse lib; do
		if [[ -f $t/$which.rr ]] && ! cmp -s "$t/kernel.rr" "$t/$which.rr"; then
			diff -u --label "kernel $tag" --label "$which $tag" "$t/kernel.rr" "$t/$which.rr" \
				>"$t/$which.rr.diff" || true
			fail "$tag" "$which random reads differ from the kernel's (offset length returned hash), first lines:
$(head -n 30 "$t/$which.rr.diff")"
			ok=0
		fi
	done

	if [[ $ok -eq 1 ]]; then
		npass=$((npass + 1))
		echo "PASS $tag ($(wc -l <"$t/kernel.txt") entries)"
	else
		mkdir -p "$artifacts/$tag"
		cp "$t"/*.txt "$t"/*.err "$artifacts/$tag/" 2>/dev/null || true
		cp "$t"/*.diff "$t"/*.rr "$artifacts/$tag/" 2>/dev/null || true
		echo "FAIL $tag"
	fi
}

imgs=()
if [[ -n ${UBT_IMAGES:-} ]]; then
	for n in $UBT_IMAGES; do imgs+=("$images/$n.img"); done
else
	imgs=("$images"/*.img)
fi
for img in "${imgs[@]}"; do
	compare "$img" ""
	extra=()
	[[ ! -f ${img%.img}.opts ]] || mapfile -t extra <"${img%.img}.opts"
	for o in "${extra[@]}"; do
		[[ -z $o ]] || compare "$img" "$o"
	done
done

if ! (ubt_check_sanitizer); then
	failures+=("sanitizer reports (see above)")
fi

echo "compat: $npass comparisons passed, ${#failures[@]} failed, ${#xfails[@]} known gaps"
[[ ${#xfails[@]} -eq 0 ]] || printf '  XFAIL %s\n' "${xfails[@]}"
if [[ ${#failures[@]} -gt 0 ]]; then
	printf '  %s\n' "${failures[@]}" | cut -c1-2000 >&2
	echo "manifests of the failures: $artifacts" >&2
	exit 1
fi
