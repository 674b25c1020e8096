# common.sh — helpers shared by the shell suites (tests/<suite>/test_*.sh). Source it first:
#
#   source "$(dirname "$0")/../lib/common.sh"
#
# It works under `set -u` and under `set -euo pipefail`, defines functions and nothing runs at
# source time (but setting UBT_LOOPS=() and fail=0). Suite libraries (tests/compat/lib.sh, tests/rw/lib.sh) build on it; helpers only
# one suite needs stay in that suite.
#
# Skip checks and tools
#   ubt_skip_unless_root_fuse  print "SKIP: needs root and /dev/fuse" and exit 0 unless we run as
#                              root and /dev/fuse exists (the only SKIP line a test prints for that)
#   ubt_skip_unless_cmds WHAT CMD...  "SKIP: needs WHAT" and exit 0 if a CMD is not in PATH (for
#                              tests that have always skipped without, e.g., btrfs-progs)
#   ubt_need CMD...            "FAIL: needs CMD" and exit 1 for the first CMD not in PATH
#   ubt_tool_paths             UBT_SRC_DIR, UBT_BUILD_DIR, UBTRFS_BIN, UBT_TOOLS_DIR from CTest's
#                              environment, else the source tree and its build/ dir; MANIFEST
#   ubt_need_ubtrfs            UBTRFS_BIN defaults to ${UBT_BUILD_DIR:-.}/ubtrfs; "FAIL: no ubtrfs
#                              program at ..." and exit 1 unless it is executable
#
# Temp dir and teardown
#   ubt_tmpdir NAME            T = a new private dir /tmp/ubtrfs-NAME.XXXXXX; installs ubt_teardown
#                              as the EXIT trap
#   ubt_teardown [gentle]      (the EXIT trap) calls ubt_teardown_pre if the test defines it (to
#                              end the processes it started), unmounts every mount below $T
#                              deepest first (lazily; "gentle": a plain umount first), detaches
#                              the loop devices in UBT_LOOPS, calls ubt_teardown_post if defined,
#                              removes $T. Set UBT_TEARDOWN_GENTLE=1 for the gentle unmounts.
#   ubt_umount_below DIR [gentle]  unmount every mount at or below DIR, deepest first
#
# Results (the counter is $fail: 0, or 1 once anything failed)
#   ok MSG / bad MSG           print "ok: MSG" / "FAIL: MSG" (bad sets fail=1)
#   check DESC CMD...          ok DESC if CMD succeeds, else bad DESC
#   ubt_finish                 print PASS or FAILED and exit with $fail
#
# Processes (only ever the ones a test started: matched by its own temp dir or recorded pids)
#   ubt_pid_alive PID          the process runs and is not a zombie (daemons may be reaped late)
#   ubt_pids_gone "PIDS"       none of the space-separated PIDS is alive
#   ubt_live_pids PATTERN      pids of live processes whose command line matches PATTERN (pgrep -f)
#   ubt_pids_with_arg DIR      pids of processes with DIR as one of their arguments
#   ubt_kill PID...            kill (SIGTERM) each PID, errors ignored
#   ubt_wait_until SECS CMD... poll CMD every 50 ms until it succeeds; 1 if SECS pass first
#
# Loop devices and mounts
#   ubt_attach IMG [-r]        losetup -f --show IMG into UBT_LOOP, recorded in UBT_LOOPS ("" and
#                              1 on failure; not in a $(...) subshell: the record would be lost)
#   ubt_detach LOOP            losetup -d LOOP (errors ignored) and forget it
#   ubt_fuse_mount IMG DIR [OPTS]  `ubtrfs mount [-o OPTS] IMG DIR`; bad + 1 with its output on failure
#   ubt_fuse_umount DIR        `ubtrfs umount DIR`; bad with its output on failure
#   ubt_check_image IMG WHAT [LINES]  btrfs check --readonly IMG: ok "btrfs check --readonly
#                              (WHAT)", else bad and the last LINES (20) lines of its output

declare -ga UBT_LOOPS=()
UBT_LOOP=""
fail=${fail:-0}

# ---- skip checks and tools ------------------------------------------------------------------

ubt_skip_unless_root_fuse() {
	if [ "$(id -u)" != 0 ] || [ ! -c /dev/fuse ]; then
		echo "SKIP: needs root and /dev/fuse"
		exit 0
	fi
}

ubt_skip_unless_cmds() {
	local what=$1 c
	shift
	for c in "$@"; do
		if ! command -v "$c" >/dev/null; then
			echo "SKIP: needs $what"
			exit 0
		fi
	done
}

ubt_need() {
	local c
	for c in "$@"; do
		command -v "$c" >/dev/null || { echo "FAIL: needs $c"; exit 1; }
	done
}

ubt_tool_paths() {
	local src
	src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
	UBT_SRC_DIR=${UBT_SRC_DIR:-$src}
	UBT_BUILD_DIR=${UBT_BUILD_DIR:-$UBT_SRC_DIR/build}
	UBTRFS_BIN=${UBTRFS_BIN:-$UBT_BUILD_DIR/ubtrfs}
	UBT_TOOLS_DIR=${UBT_TOOLS_DIR:-$UBT_BUILD_DIR/tests}
	MANIFEST=$UBT_TOOLS_DIR/manifest
}

ubt_need_ubtrfs() {
	UBTRFS_BIN=${UBTRFS_BIN:-${UBT_BUILD_DIR:-.}/ubtrfs}
	[ -x "$UBTRFS_BIN" ] || { echo "FAIL: no ubtrfs program at $UBTRFS_BIN"; exit 1; }
}

# ---- results --------------------------------------------------------------------------------

ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; fail=1; }
check() { # DESCRIPTION COMMAND...
	local d=$1
	shift
	if "$@"; then ok "$d"; else bad "$d"; fi
}
ubt_finish() {
	if [ "$fail" = 0 ]; then echo "PASS"; else echo "FAILED"; fi
	exit "$fail"
}

# ---- processes ------------------------------------------------------------------------------

ubt_pid_alive() {
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[[ ${stat:0:1} != Z && ${stat:0:1} != X ]]
}

ubt_pids_gone() {
	local p
	for p in $1; do
		! ubt_pid_alive "$p" || return 1
	done
}

ubt_live_pids() {
	local p
	for p in $(pgrep -f -- "$1" || true); do
		! ubt_pid_alive "$p" || echo "$p"
	done
}

ubt_pids_with_arg() {
	local dir=$1 p a
	for p in /proc/[0-9]*; do
		[[ -r $p/cmdline ]] || continue
		while IFS= read -r -d '' a; do
			if [[ $a == "$dir" ]]; then
				echo "${p#/proc/}"
				break
			fi
		done <"$p/cmdline" 2>/dev/null || true
	done
}

ubt_kill() {
	local p
	for p in "$@"; do
		kill "$p" 2>/dev/null
	done
	return 0
}

ubt_wait_until() {
	local end=$((SECONDS + $1))
	shift
	until "$@"; do
		((SECONDS < end)) || return 1
		sleep 0.05
	done
}

# ---- temp dir and teardown ------------------------------------------------------------------

ubt_tmpdir() {
	T=$(mktemp -d "/tmp/ubtrfs-$1.XXXXXX")
	trap ubt_teardown EXIT
}

ubt_umount_below() {
	local dir=$1 gentle=${2:-} m
	for m in $(awk -v t="$dir" 'index($2, t) == 1 { print $2 }' /proc/mounts | sort -r); do
		if [ -n "$gentle" ]; then
			umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
		else
			umount -l "$m" 2>/dev/null
		fi
	done
}

ubt_teardown() {
	local l
	set +e
	if [[ ${fail:-0} != 0 && -s $T/daemon.log ]]; then
		echo "--- the ubtrfs daemons' log (last 60 lines):"
		tail -n 60 "$T/daemon.log"
	fi
	if declare -F ubt_teardown_pre >/dev/null; then ubt_teardown_pre; fi
	ubt_umount_below "$T" "${UBT_TEARDOWN_GENTLE:-}"
	for l in "${UBT_LOOPS[@]}"; do
		losetup -d "$l" 2>/dev/null
	done
	if declare -F ubt_teardown_post >/dev/null; then ubt_teardown_post; fi
	rm -rf "$T"
}

# ---- loop devices and mounts ----------------------------------------------------------------

ubt_attach() {
	UBT_LOOP=""
	UBT_LOOP=$(losetup -f --show ${2:+"$2"} "$1") || return 1
	UBT_LOOPS+=("$UBT_LOOP")
}

ubt_detach() {
	local loop=$1 i
	losetup -d "$loop" 2>/dev/null || true
	for i in "${!UBT_LOOPS[@]}"; do
		[[ ${UBT_LOOPS[$i]} != "$loop" ]] || unset 'UBT_LOOPS[$i]'
	done
}

ubt_fuse_mount() { # IMG DIR [OPTS]; the daemon logs to $T/daemon.log, shown by a failing test
	if "$UBTRFS_BIN" mount -o "${3:+$3,}logfile=$T/daemon.log" "$1" "$2" >"$T/mount.out" 2>&1; then
		return 0
	fi
	bad "ubtrfs mount ${3:+-o $3 }$1: $(cat "$T/mount.out")"
	return 1
}

ubt_fuse_umount() { # DIR
	"$UBTRFS_BIN" umount "$1" >"$T/umount.out" 2>&1 || bad "ubtrfs umount $1: $(cat "$T/umount.out")"
}

ubt_check_image() { # IMG WHAT [LINES]
	if btrfs check --readonly "$1" >"$T/check.out" 2>&1; then
		ok "btrfs check --readonly ($2)"
	else
		bad "btrfs check --readonly ($2):"
		tail -n "${3:-20}" "$T/check.out"
	fi
}
