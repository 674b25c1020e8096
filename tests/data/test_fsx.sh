#!/bin/bash
# test_fsx.sh — the model-checked random data exerciser (tests/tools/ubt_fsx.c) on fresh 512 MiB
# images: buffered/direct/mapped writes and reads, truncate, fallocate modes, flush/fsync/sync and
# remounts against an in-memory model, 100,000 ops per mode with a fixed seed — compression off,
# zstd, lzo, zlib, compress-force on 4 KiB nodes, and an `ubtrfs mkfs` image. After each run:
# `btrfs check --readonly`, then (root only) the kernel mounts the image read-only (loop) and every
# file must equal the model byte for byte.
#
# Environment: UBT_FSX_SEED (default 1), UBT_FSX_OPS (default 100000), UBT_FSX_MODES (names to run,
# comma separated), UBT_SOAK=1 (10x the ops, random seeds, printed), UBT_KEEP_TMP=1. A failing run
# keeps its pristine image and op record and prints the command that shrinks the failure.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/../.." && pwd)
UBT_SRC_DIR=${UBT_SRC_DIR:-$SRC}
UBT_BUILD_DIR=${UBT_BUILD_DIR:-$UBT_SRC_DIR/build}
UBTRFS_BIN=${UBTRFS_BIN:-$UBT_BUILD_DIR/ubtrfs}
UBT_TOOLS_DIR=${UBT_TOOLS_DIR:-$UBT_BUILD_DIR/tests}
FSX=$UBT_TOOLS_DIR/ubt_fsx

die() {
	echo "FAIL: $*"
	exit 1
}
for t in "$FSX" "$UBTRFS_BIN"; do
	[[ -x $t ]] || die "not built: $t"
done
for c in mkfs.btrfs btrfs cmp; do
	command -v "$c" >/dev/null || die "needs $c"
done

KERNEL=1
if [[ $(id -u) -ne 0 ]]; then
	echo "SKIP kernel comparison: needs root"
	KERNEL=0
elif ! grep -qw btrfs /proc/filesystems && ! modprobe btrfs 2>/dev/null; then
	echo "SKIP kernel comparison: no btrfs in this kernel"
	KERNEL=0
fi

TMP=$(mktemp -d "${TMPDIR:-/var/tmp}/ubt-fsx.XXXXXX")
KMNT=$TMP/kmnt
LOOP=""
KEEP=${UBT_KEEP_TMP:-}
cleanup() {
	local rc=$?
	set +e
	if mountpoint -q "$KMNT" 2>/dev/null; then
		umount "$KMNT" 2>/dev/null || umount -l "$KMNT"
	fi
	[[ -z $LOOP ]] || losetup -d "$LOOP" 2>/dev/null
	if [[ -n $KEEP ]]; then
		echo "keeping $TMP"
	elif ! grep -q " $TMP" /proc/mounts; then
		rm -rf "$TMP"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

OPS=${UBT_FSX_OPS:-100000}
SEED=${UBT_FSX_SEED:-1}
if [[ -n ${UBT_SOAK:-} ]]; then
	OPS=$((OPS * 10))
fi

# name  mkfs    mkfs options  ubt_fsx options
RUNS=(
	"plain kernel - -"
	"zstd kernel - --compress,zstd"
	"lzo kernel - --compress,lzo"
	"zlib kernel - --compress,zlib"
	"force-zstd-4k kernel -n,4096 --compress,zstd:3,--compress-force"
	"ubtrfs-mkfs ubtrfs - -"
)

# The archive the tools link: a call it defines must not show up as "not in this build" (a weak
# reference the static link left unresolved would hide the op).
LIBA=$(find "$UBT_BUILD_DIR" -maxdepth 2 -name 'libubtrfs*.a' | head -n 1)

fails=0
total_start=$SECONDS
n=0
for run in "${RUNS[@]}"; do
	read -r name how mkopts fsxopts <<<"$run"
	if [[ -n ${UBT_FSX_MODES:-} && ,$UBT_FSX_MODES, != *,$name,* ]]; then
		continue
	fi
	seed=$((SEED + n))
	n=$((n + 1))
	if [[ -n ${UBT_SOAK:-} ]]; then
		seed=$(((RANDOM << 30) ^ (RANDOM << 15) ^ RANDOM))
	fi
	mk=()
	[[ $mkopts == - ]] || IFS=, read -r -a mk <<<"$mkopts"
	fo=()
	[[ $fsxopts == - ]] || IFS=, read -r -a fo <<<"$fsxopts"
	dir=$TMP/$name
	mkdir -p "$dir"
	img=$dir/img
	truncate -s 512M "$img"
	if [[ $how == kernel ]]; then
		mkfs.btrfs -q -f "${mk[@]}" "$img" >"$dir/mkfs.out" 2>&1 || { cat "$dir/mkfs.out"; die "mkfs.btrfs"; }
	else
		"$UBTRFS_BIN" mkfs -q -f "${mk[@]}" "$img" >"$dir/mkfs.out" 2>&1 || { cat "$dir/mkfs.out"; die "ubtrfs mkfs"; }
	fi
	cp --sparse=always "$img" "$dir/pristine.img"
	cmd=("$FSX" "$img" -s "$seed" -n "$OPS" "${fo[@]}" --dump "$dir/model" --record "$dir/ops")
	echo "=== $name: ${cmd[*]#"$TMP"/}"
	start=$SECONDS
	if ! "${cmd[@]}" >"$dir/fsx.out" 2>&1; then
		tail -n 60 "$dir/fsx.out"
		echo "FAIL: $name: ubt_fsx seed $seed ($((SECONDS - start)) s); reproduce: ${cmd[*]}"
		echo "      shrink: $FSX $dir/pristine.img ${fo[*]} --replay $dir/ops --shrink"
		KEEP=1
		fails=$((fails + 1))
		continue
	fi
	grep '^op .* disabled' "$dir/fsx.out" || true
	grep -E '^ops:|PASS' "$dir/fsx.out"
	if [[ -n $LIBA ]] && command -v nm >/dev/null; then
		for fn in $(sed -n 's/^op .* disabled: \(.*\) is not in this build$/\1/p' "$dir/fsx.out" | tr '/' ' ' | sort -u); do
			if nm -g --defined-only "$LIBA" 2>/dev/null | grep -qw "T $fn"; then
				echo "FAIL: $name: $LIBA defines $fn but ubt_fsx linked without it (weak reference left unresolved)"
				fails=$((fails + 1))
			fi
		done
	fi
	rm -f "$dir/pristine.img" "$dir/ops"
	if btrfs check --readonly "$img" >"$dir/check.out" 2>&1; then
		echo "ok: $name: btrfs check --readonly"
	else
		grep -v '^\[' "$dir/check.out" | head -n 40
		echo "FAIL: $name: btrfs check --readonly (seed $seed)"
		KEEP=1
		fails=$((fails + 1))
		continue
	fi
	if ((KERNEL)); then
		mkdir -p "$KMNT"
		LOOP=$(losetup -f --show -r "$img") || die "losetup $img"
		mount -t btrfs -o ro "$LOOP" "$KMNT" || die "$name: kernel mount -o ro"
		bad=0
		for f in "$dir"/model/*; do
			b=${f##*/}
			if ! cmp "$f" "$KMNT/$b"; then
				echo "FAIL: $name: kernel reads $b differently from the model (seed $seed)"
				bad=1
			fi
		done
		if [[ $(ls "$KMNT" | wc -l) -ne $(ls "$dir/model" | wc -l) ]]; then
			echo "FAIL: $name: the kernel lists $(ls "$KMNT" | tr '\n' ' ')"
			bad=1
		fi
		umount "$KMNT"
		losetup -d "$LOOP"
		LOOP=""
		if ((bad)); then
			KEEP=1
			fails=$((fails + 1))
			continue
		fi
		echo "ok: $name: the kernel reads every file as the model has it"
	fi
	echo "ok: $name in $((SECONDS - start)) s"
	rm -rf "$dir"
done

echo "total $((SECONDS - total_start)) s"
if ((fails)); then
	echo "FAILED: $fails check(s)"
	exit 1
fi
echo "PASS"
