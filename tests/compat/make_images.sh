#!/usr/bin/env bash
# make_images.sh CACHE_DIR [NAME...]: create kernel-written btrfs images for the compatibility
# suites (as root: truncate + mkfs.btrfs, loop mount with the kernel, populate, umount).
#
# For each image NAME it writes CACHE_DIR/NAME.img and CACHE_DIR/NAME.opts, the extra mount
# options worth comparing besides the default subvolume (one set per line, e.g. "subvol=sub").
# Images whose inputs (these scripts, mkfs.btrfs version) did not change are kept.
# With NAME arguments only those images are made. UBT_JOBS (default 2) images are made at once.
# Images named crash-* hold a log tree (fsync'd changes not yet committed): the kernel replays it
# at mount, writing to the image, so mount a copy of them with the kernel.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
source "$here/populate.sh"

[[ $# -ge 1 ]] || { echo "usage: $0 CACHE_DIR [NAME...]" >&2; exit 2; }
cache=$1
shift
[[ $(id -u) -eq 0 ]] || ubt_die "make_images.sh must run as root"
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

# name | image size | mkfs options | mount options | populate function
IMAGES=(
	"rich-zlib|384M||compress=zlib|populate_rich"
	"rich-lzo|384M||compress=lzo|populate_rich"
	"rich-zstd|384M||compress=zstd|populate_rich"
	"rich-forcezstd|384M||compress-force=zstd:3|populate_rich"
	"rich-holes|384M|-O ^no-holes||populate_rich"
	"m-crc32c-n4k|192M|--csum crc32c --nodesize 4096 --sectorsize 4096||populate_small_big"
	"m-xxhash-n16k|192M|--csum xxhash --nodesize 16384 --sectorsize 4096|compress=zstd|populate_small"
	"m-sha256-n64k|192M|--csum sha256 --nodesize 65536 --sectorsize 4096||populate_small"
	"m-blake2-n4k|192M|--csum blake2 --nodesize 4096 --sectorsize 4096|compress=lzo|populate_small"
	"m-blake2-n64k|192M|--csum blake2 --nodesize 65536 --sectorsize 4096|compress=zlib|populate_small"
	"crash-log|192M||commit=300|populate_crash"
)

stamp=$( (cat "$here/make_images.sh" "$here/populate.sh"; mkfs.btrfs --version) | sha256sum | cut -d' ' -f1)

ubt_init make-images

# make_one SPEC: build one image (in a subshell of its own, so its mounts are its own).
make_one() {
	local name size mkfs_opts mount_opts populate
	IFS='|' read -r name size mkfs_opts mount_opts populate <<<"$1"
	local img="$cache/$name.img" tmpimg="$cache/.$name.img.tmp" mnt="$UBT_TMP/mnt-$name"
	if [[ -f $img && -f $cache/$name.stamp && $(cat "$cache/$name.stamp") == "$stamp" ]]; then
		return 0
	fi
	rm -f "$img" "$cache/$name.stamp" "$cache/$name.opts" "$tmpimg"
	truncate -s "$size" "$tmpimg"
	# shellcheck disable=SC2086 # mkfs options are a word list
	mkfs.btrfs -q -f $mkfs_opts "$tmpimg" >/dev/null
	kmount "$tmpimg" "$mnt" "$mount_opts"
	if [[ $populate == populate_crash ]]; then
		# The image as a crash right now would leave it: fsync'd changes only in the log tree.
		# A sync(2) from anywhere else on the machine commits the transaction and empties the
		# log, so check, and try again a few times.
		local try super
		for try in 1 2 3 4 5; do
			"$populate" "$mnt"
			cp --sparse=always "$tmpimg" "$tmpimg.crash"
			super=$(btrfs inspect-internal dump-super "$tmpimg.crash")
			if grep -Eq '^log_root[[:space:]]+[1-9]' <<<"$super"; then
				break
			fi
			rm -f "$tmpimg.crash"
			[[ $try -lt 5 ]] || ubt_die "$name: no log tree in the image after $try tries (something keeps calling sync)"
			kumount "$mnt"
			mkfs.btrfs -q -f $mkfs_opts "$tmpimg" >/dev/null
			kmount "$tmpimg" "$mnt" "$mount_opts"
		done
		echo "nologreplay" >"$cache/$name.opts.tmp"
		kumount "$mnt"
		mv "$tmpimg.crash" "$tmpimg"
	else
		"$populate" "$mnt"
		# Extra mount option sets for the comparison.
		{
			echo "subvol=sub"
			echo "subvolid=$(btrfs inspect-internal rootid "$mnt/snap")"
			echo "subvol=snap_ro"
		} >"$cache/$name.opts.tmp"
		sync -f "$mnt"
		kumount "$mnt"
	fi
	mv "$cache/$name.opts.tmp" "$cache/$name.opts"
	mv "$tmpimg" "$img"
	echo "$stamp" >"$cache/$name.stamp"
}

want=("$@")
jobs=${UBT_JOBS:-2}
declare -A running=()
failed=0
start=$SECONDS
for spec in "${IMAGES[@]}"; do
	name=${spec%%|*}
	if [[ ${#want[@]} -gt 0 && " ${want[*]} " != *" $name "* ]]; then
		continue
	fi
	while [[ ${#running[@]} -ge $jobs ]]; do
		wait -n -p done_pid || true
		[[ -z ${done_pid:-} ]] || { unset "running[$done_pid]"; }
		done_pid=""
		for p in "${!running[@]}"; do
			kill -0 "$p" 2>/dev/null || unset "running[$p]"
		done
	done
	(
		# The subshell's own cleanup state: inherits nothing mounted.
		UBT_KMOUNT_LOOP=()
		UBT_LOOPS=()
		# Not `make_one || ...`: that would switch off set -e inside make_one.
		exec 3>&2 >"$UBT_TMP/log-$name" 2>&1
		trap 'rc=$?; for d in "${!UBT_KMOUNT_LOOP[@]}"; do umount "$d" 2>/dev/null || umount -l "$d"; done;
		      for l in "${UBT_LOOPS[@]}"; do losetup -d "$l" 2>/dev/null; done;
		      [[ $rc -eq 0 ]] || cat "$UBT_TMP/log-'"$name"'" >&3; exit $rc' EXIT
		make_one "$spec"
	) &
	running[$!]=$name
done
for p in "${!running[@]}"; do
	if ! wait "$p"; then
		echo "make_images: image ${running[$p]} failed" >&2
		failed=1
	fi
done
# Jobs reaped by wait -n above report through their missing stamp.
for spec in "${IMAGES[@]}"; do
	name=${spec%%|*}
	if [[ ${#want[@]} -gt 0 && " ${want[*]} " != *" $name "* ]]; then
		continue
	fi
	if [[ ! -f $cache/$name.stamp ]]; then
		echo "make_images: image $name missing" >&2
		failed=1
	fi
done
[[ $failed -eq 0 ]] || exit 1
echo "make_images: images in $cache ($((SECONDS - start))s)" >&2
