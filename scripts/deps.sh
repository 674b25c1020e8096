#!/usr/bin/env bash
# deps.sh — install everything ubtrfs needs to build and test on Debian 12 (run as root), and
# load the btrfs, fuse and loop kernel modules (best effort).
#
# If every package is already installed, apt is not touched (no network needed); set
# UBT_DEPS_FORCE=1 to run apt-get update/install anyway.
set -euo pipefail

PACKAGES=(
	# build
	build-essential cmake pkg-config
	libfuse3-dev libzstd-dev liblzo2-dev zlib1g-dev libxxhash-dev libsodium-dev libcmocka-dev
	# run and test: FUSE, the kernel oracle and its tools
	fuse3 btrfs-progs attr acl xxhash python3 kmod util-linux mount e2fsprogs fio jq
)

missing=()
for p in "${PACKAGES[@]}"; do
	st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	if [[ $st != "install ok installed" ]]; then
		missing+=("$p")
	fi
done

if [[ ${#missing[@]} -gt 0 || -n ${UBT_DEPS_FORCE:-} ]]; then
	if [[ $(id -u) -ne 0 ]]; then
		echo "deps.sh: missing packages (${missing[*]}); run as root to install them" >&2
		exit 1
	fi
	if ! command -v apt-get >/dev/null; then
		echo "deps.sh: apt-get not found; install by hand: ${PACKAGES[*]}" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	echo "deps.sh: installing ${missing[*]:-(forced)}" >&2
	if ! apt-get update -q </dev/null; then
		# A package index we cannot refresh is fatal only when something is missing.
		[[ ${#missing[@]} -eq 0 ]] || { echo "deps.sh: apt-get update failed" >&2; exit 1; }
		echo "deps.sh: warning: apt-get update failed; every package is installed already" >&2
	fi
	# Every name must exist in the archive; say which one does not before failing.
	for p in "${PACKAGES[@]}"; do
		policy=$(apt-cache policy "$p" 2>/dev/null || true)
		if ! grep -q 'Candidate: [^(]' <<<"$policy"; then
			echo "deps.sh: package $p has no installation candidate" >&2
			exit 1
		fi
	done
	apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" </dev/null ||
		[[ ${#missing[@]} -eq 0 ]] || exit 1
fi

# Kernel modules: the oracle (btrfs), FUSE and loop devices. Built-in modules need nothing.
if [[ $(id -u) -eq 0 ]]; then
	for m in btrfs fuse loop; do
		modprobe "$m" 2>/dev/null || true
	done
	[[ -e /dev/fuse ]] || mknod -m 0666 /dev/fuse c 10 229 2>/dev/null || true
fi
grep -qw btrfs /proc/filesystems || echo "deps.sh: warning: the kernel has no btrfs; the kernel-oracle tests will be skipped" >&2
[[ -c /dev/fuse ]] || echo "deps.sh: warning: no /dev/fuse; the FUSE tests will be skipped" >&2
exit 0
