# Shared helpers for the shell suites that drive the kernel's btrfs (the oracle) and ubtrfs.
# Source it from a script that runs with `set -euo pipefail`:
#
#   source "$(dirname "$0")/../compat/lib.sh"
#
# Every mount, loop device and FUSE daemon started through these helpers is recorded and torn
# down by ubt_cleanup (installed as the EXIT trap by ubt_init), so a failing test leaves nothing
# behind. Loop devices are created explicitly (losetup -f --show) and only those are detached.
# Waiting is done by polling a condition with a generous upper bound, never by fixed sleeps.
# Built on tests/lib/common.sh (skip check, tool paths, pids, waits, loop devices: UBT_LOOPS).

source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

UBT_WAIT_SECS=${UBT_WAIT_SECS:-180}

declare -gA UBT_KMOUNT_LOOP=()  # kernel mountpoint -> loop device
declare -gA UBT_FMOUNT_PID=()   # FUSE mountpoint -> pid of the `ubtrfs mount` we started
declare -gA UBT_FMOUNT_DPIDS=() # FUSE mountpoint -> daemon pids seen while mounted
UBT_TMP=""

ubt_msg() { printf '%s\n' "$*" >&2; }
ubt_die() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

# ubt_init NAME: a private temp dir in $UBT_TMP and the EXIT trap.
ubt_init() {
	local name=$1
	UBT_TMP=$(mktemp -d "${TMPDIR:-/var/tmp}/ubt-$name.XXXXXX")
	mkdir -p "$UBT_TMP/sanitizer"
	trap ubt_cleanup EXIT
	trap 'exit 130' INT TERM
}

# True if we run as root and can use FUSE and loop devices; else print the SKIP line and exit 0.
ubt_require_root_fuse() {
	ubt_skip_unless_root_fuse
	if ! command -v mkfs.btrfs >/dev/null || ! command -v losetup >/dev/null; then
		echo "SKIP: needs root and /dev/fuse"
		exit 0
	fi
	if ! grep -qw btrfs /proc/filesystems; then
		modprobe btrfs 2>/dev/null || true
	fi
	if ! grep -qw btrfs /proc/filesystems; then
		echo "SKIP: needs root and /dev/fuse (and the kernel's btrfs)"
		exit 0
	fi
}

# The tools under test, from CTest's environment or the default build dir.
ubt_find_tools() {
	ubt_tool_paths
	[[ -x $MANIFEST ]] || ubt_die "manifest tool not built: $MANIFEST"
	[[ -x $UBTRFS_BIN ]] || ubt_die "ubtrfs CLI not built: $UBTRFS_BIN"
	export UBT_SRC_DIR UBT_BUILD_DIR UBTRFS_BIN UBT_TOOLS_DIR MANIFEST
}

# Sanitizer reports of everything we run go to files, so a daemon's report is not lost with its
# stderr. Appends to whatever options the caller already set.
ubt_sanitizer_env() {
	local p="$UBT_TMP/sanitizer/report"
	export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}log_path=$p"
	export UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}print_stacktrace=1:log_path=$p"
}

# Fail if any sanitizer report was written (shows them).
ubt_check_sanitizer() {
	local f found=0
	for f in "$UBT_TMP"/sanitizer/report*; do
		[[ -e $f ]] || continue
		found=1
		ubt_msg "=== sanitizer report $f"
		head -n 80 "$f" >&2
	done
	[[ $found -eq 0 ]] || ubt_die "sanitizer reported errors"
}

# ---- kernel mounts --------------------------------------------------------------------------

# kmount IMG DIR [OPTS]: attach IMG to a new loop device and mount it with the kernel's btrfs.
# With "ro" among OPTS the loop device is read-only too, so the oracle cannot change the image
# (a log tree then needs "nologreplay", or a writable copy of the image: pass "rwloop" as the
# fourth argument).
kmount() {
	local img=$1 dir=$2 opts=${3:-}
	local loop ro=()
	[[ ,$opts, != *,ro,* || ${4:-} == rwloop ]] || ro=(-r)
	mkdir -p "$dir"
	ubt_attach "$img" "${ro[@]}"
	loop=$UBT_LOOP
	UBT_KMOUNT_LOOP[$dir]=$loop
	if ! mount -t btrfs ${opts:+-o "$opts"} "$loop" "$dir"; then
		unset 'UBT_KMOUNT_LOOP[$dir]'
		ubt_detach "$loop"
		ubt_die "kernel mount of $img ${opts:+(-o $opts) }failed"
	fi
}

# kumount DIR: unmount and detach the loop device kmount attached.
kumount() {
	local dir=$1
	local loop=${UBT_KMOUNT_LOOP[$dir]:-}
	umount "$dir"
	unset 'UBT_KMOUNT_LOOP[$dir]'
	[[ -z $loop ]] || ubt_detach "$loop"
}

# ---- ubtrfs FUSE mounts ---------------------------------------------------------------------

# fmount IMG DIR [OPTS]: mount with `ubtrfs mount -o ro[,OPTS]` and wait until it is mounted.
# Returns 1 (with the mount's output on stderr) if the mount fails.
fmount() {
	local img=$1 dir=$2 opts=${3:-}
	local log="$UBT_TMP/fmount.$(basename "$dir").log"
	mkdir -p "$dir"
	"$UBTRFS_BIN" mount -o "ro${opts:+,$opts}" "$img" "$dir" </dev/null >"$log" 2>&1 &
	local pid=$!
	UBT_FMOUNT_PID[$dir]=$pid
	local end=$((SECONDS + UBT_WAIT_SECS))
	until mountpoint -q "$dir"; do
		if ! kill -0 "$pid" 2>/dev/null; then
			local rc=0
			wait "$pid" || rc=$?
			unset 'UBT_FMOUNT_PID[$dir]'
			# A daemonizing mount exits 0 only after the mount is up; recheck once.
			if [[ $rc -eq 0 ]] && mountpoint -q "$dir"; then
				break
			fi
			cat "$log" >&2
			ubt_msg "ubtrfs mount -o ro${opts:+,$opts} $img failed (exit $rc)"
			return 1
		fi
		if ((SECONDS >= end)); then
			cat "$log" >&2
			ubt_msg "ubtrfs mount of $img: not mounted after ${UBT_WAIT_SECS}s"
			return 1
		fi
		sleep 0.05
	done
	UBT_FMOUNT_DPIDS[$dir]=$(ubt_pids_with_arg "$dir" | tr '\n' ' ')
	return 0
}

# fumount DIR: unmount with `ubtrfs umount` (fusermount3 -u if the CLI has no umount yet), then
# wait until the daemon has exited (FUSE unmount is asynchronous). Returns 1 if the unmount
# failed, the daemon did not exit, or the `ubtrfs mount` process we started exited non-zero.
fumount() {
	local dir=$1 ret=0
	local dpids=${UBT_FMOUNT_DPIDS[$dir]:-}
	local log="$UBT_TMP/fumount.$(basename "$dir").log"
	if ! "$UBTRFS_BIN" umount "$dir" >"$log" 2>&1; then
		if ! grep -qiE 'unknown|usage|not supported|invalid command|unrecognized' "$log"; then
			cat "$log" >&2
			ubt_msg "ubtrfs umount $dir failed"
			ret=1
		fi
		if mountpoint -q "$dir"; then
			fusermount3 -u "$dir" || { ubt_msg "fusermount3 -u $dir failed"; return 1; }
		fi
	fi
	if ! ubt_wait_until "$UBT_WAIT_SECS" ubt_pids_gone "$dpids"; then
		ubt_msg "ubtrfs daemon (pids $dpids) for $dir still running ${UBT_WAIT_SECS}s after unmount"
		return 1
	fi
	if mountpoint -q "$dir"; then
		ubt_msg "$dir still mounted after unmount"
		return 1
	fi
	local pid=${UBT_FMOUNT_PID[$dir]:-}
	unset 'UBT_FMOUNT_PID[$dir]' 'UBT_FMOUNT_DPIDS[$dir]'
	if [[ -n $pid ]]; then
		local rc=0
		wait "$pid" || rc=$?
		if [[ $rc -ne 0 ]]; then
			cat "$UBT_TMP/fmount.$(basename "$dir").log" >&2
			ubt_msg "ubtrfs mount process for $dir exited with status $rc"
			ret=1
		fi
	fi
	return $ret
}

# ---- teardown -------------------------------------------------------------------------------

ubt_cleanup() {
	local rc=$? dir loop pid
	set +e
	for dir in "${!UBT_FMOUNT_PID[@]}" "${!UBT_FMOUNT_DPIDS[@]}"; do
		if mountpoint -q "$dir"; then
			"$UBTRFS_BIN" umount "$dir" >/dev/null 2>&1 || fusermount3 -u "$dir" 2>/dev/null ||
				fusermount3 -u -z "$dir" 2>/dev/null
		fi
	done
	for dir in "${!UBT_FMOUNT_DPIDS[@]}"; do
		ubt_wait_until 30 ubt_pids_gone "${UBT_FMOUNT_DPIDS[$dir]}" ||
			for pid in ${UBT_FMOUNT_DPIDS[$dir]}; do ubt_pid_alive "$pid" && kill -9 "$pid" 2>/dev/null; done
	done
	for dir in "${!UBT_FMOUNT_PID[@]}"; do
		pid=${UBT_FMOUNT_PID[$dir]}
		kill "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	done
	for dir in "${!UBT_KMOUNT_LOOP[@]}"; do
		umount "$dir" 2>/dev/null || umount -l "$dir" 2>/dev/null
	done
	for loop in "${UBT_LOOPS[@]}"; do
		losetup -d "$loop" 2>/dev/null
	done
	if [[ -n $UBT_TMP && -d $UBT_TMP ]]; then
		if [[ -n ${UBT_KEEP_TMP:-} ]]; then
			ubt_msg "keeping $UBT_TMP"
		elif ! grep -q " $UBT_TMP" /proc/mounts; then
			rm -rf "$UBT_TMP"
		fi
	fi
	exit "$rc"
}
