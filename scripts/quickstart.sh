#!/usr/bin/env bash
# quickstart.sh [IMAGE] [MOUNTPOINT] [OPTIONS] — from a fresh Debian 12, as root: install
# dependencies, build ubtrfs, and mount a btrfs image with it.
#
# Without IMAGE a small demo image is made at /var/tmp/ubtrfs-demo.img (`ubtrfs mkfs --rootdir`
# from a generated tree) and mounted read-write. A given IMAGE is mounted read-only unless
# OPTIONS say otherwise (e.g. "rw" or "compress=zstd"). MOUNTPOINT defaults to /mnt/ubtrfs-demo.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
image=${1:-}
mnt=${2:-/mnt/ubtrfs-demo}
opts=${3:-}
build=$root/build
demo=/var/tmp/ubtrfs-demo.img

if [[ $(id -u) -ne 0 ]]; then
	echo "quickstart.sh: run as root (it installs packages and mounts)" >&2
	exit 1
fi

echo "==> dependencies"
bash "$root/scripts/deps.sh"

echo "==> build ($build)"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)" --target ubtrfs >/dev/null
ubtrfs=$build/ubtrfs
[[ -x $ubtrfs ]] || { echo "quickstart.sh: $ubtrfs was not built" >&2; exit 1; }

if [[ -z $image ]]; then
	echo "==> demo image $demo"
	tree=$(mktemp -d /var/tmp/ubtrfs-demo-tree.XXXXXX)
	trap 'rm -rf "$tree"' EXIT
	cat >"$tree/README" <<'EOF'
This is a btrfs image made by `ubtrfs mkfs` and mounted by ubtrfs, btrfs in userspace.
Everything here goes through libubtrfs: the directory tree, file contents (checksums
verified on read, written copy-on-write), symlinks and extended attributes. Change
things, unmount with `ubtrfs umount`, and `btrfs check` or the Linux kernel will agree.
EOF
	mkdir -p "$tree/docs/notes" "$tree/data"
	printf 'hello from ubtrfs\n' >"$tree/hello.txt"
	printf 'note %d\n' 1 2 3 >"$tree/docs/notes/notes.txt"
	seq 1 100000 >"$tree/data/numbers.txt"
	head -c 1048576 /dev/urandom >"$tree/data/random.bin"
	ln -s docs/notes/notes.txt "$tree/notes-link"
	rm -f "$demo"
	"$ubtrfs" mkfs -q -f -b 256M -L ubtrfs-demo --rootdir "$tree" "$demo" >/dev/null
	image=$demo
	opts=${opts:-rw}
fi
[[ -e $image ]] || { echo "quickstart.sh: no image $image" >&2; exit 1; }

mkdir -p "$mnt"
if mountpoint -q "$mnt"; then
	echo "quickstart.sh: $mnt is already a mountpoint; unmount it first ($ubtrfs umount $mnt)" >&2
	exit 1
fi

opts=${opts:-ro}
echo "==> mount ($opts)"
"$ubtrfs" mount -o "$opts" "$image" "$mnt" </dev/null
for _ in $(seq 1 100); do
	mountpoint -q "$mnt" && break
	sleep 0.1
done
mountpoint -q "$mnt" || { echo "quickstart.sh: $mnt did not get mounted" >&2; exit 1; }

echo
echo "$image is mounted ($opts) at $mnt by ubtrfs:"
echo
echo "\$ ls -l $mnt"
ls -l "$mnt"
if [[ -f $mnt/README ]]; then
	echo
	echo "\$ cat $mnt/README"
	cat "$mnt/README"
fi
echo
echo "To unmount:  $ubtrfs umount $mnt"
