# Helpers shared by the read-write suites (tests/rw/test_*.sh). Source it from a script that
# runs with `set -euo pipefail`:
#
#   source "$(dirname "$0")/lib.sh"
#   rw_init NAME            # temp dir $RW_TMP, EXIT trap, tools, SKIP unless root + /dev/fuse
#
# Every kernel mount, loop device and `ubtrfs mount` daemon started here is recorded and torn
# down by the EXIT trap, by mountpoint, loop device and PID: nothing else on the machine is
# touched. Waits poll a condition with an upper bound. Built on tests/lib/common.sh (skip check,
# tool paths, pids, loop devices).

source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

RW_WAIT_SECS=${RW_WAIT_SECS:-120}
declare -gA RW_KLOOP=()  # kernel mountpoint -> loop device
declare -gA RW_FPIDS=()  # FUSE mountpoint -> daemon pid(s)
declare -ga RW_BGPIDS=() # background processes we started
RW_TMP=""
RW_FAILS=0

rw_log() { printf '%s\n' "$*"; }
rw_ok() { printf 'ok: %s\n' "$*"; }
rw_bad() {
	printf 'FAIL: %s\n' "$*"
	RW_FAILS=$((RW_FAILS + 1))
}
rw_die() {
	printf 'FAIL: %s\n' "$*"
	exit 1
}

rw_init() {
	local name=$1
	ubt_skip_unless_root_fuse
	grep -qw btrfs /proc/filesystems || modprobe btrfs 2>/dev/null || true
	local c
	for c in mkfs.btrfs btrfs losetup python3 mountpoint; do
		command -v "$c" >/dev/null || rw_die "needs $c"
	done
	ubt_tool_paths
	WORKLOAD=$UBT_TOOLS_DIR/ubt_workload
	local t
	for t in "$MANIFEST" "$WORKLOAD" "$UBTRFS_BIN"; do
		[[ -x $t ]] || rw_die "not built: $t"
	done
	RW_TMP=$(mktemp -d "${TMPDIR:-/var/tmp}/ubt-rw-$name.XXXXXX")
	trap rw_cleanup EXIT
	trap 'exit 130' INT TERM
}

# ---- images ----

# rw_mkfs IMG SIZE kernel|ubtrfs [mkfs options...]
rw_mkfs() {
	local img=$1 size=$2 how=$3
	shift 3
	rm -f "$img"
	truncate -s "$size" "$img"
	if [[ $how == kernel ]]; then
		mkfs.btrfs -q -f "$@" "$img" >"$RW_TMP/mkfs.out" 2>&1 || { cat "$RW_TMP/mkfs.out"; rw_die "mkfs.btrfs $*"; }
	else
		"$UBTRFS_BIN" mkfs -q -f "$@" "$img" >"$RW_TMP/mkfs.out" 2>&1 || { cat "$RW_TMP/mkfs.out"; rw_die "ubtrfs mkfs $*"; }
	fi
}

# rw_check IMG WHAT: btrfs check --readonly must pass without complaining about any copy of a
# block (check falls back to the other DUP mirror and still exits 0: a clobbered mirror only
# shows as a message), and every superblock copy inside the image must have a valid checksum.
rw_check() {
	local img=$1 what=$2
	if ! btrfs check --readonly "$img" >"$RW_TMP/check.out" 2>&1; then
		rw_bad "btrfs check --readonly: $what"
		grep -v '^\[' "$RW_TMP/check.out" | head -n 40
		return 1
	fi
	if grep -qiE 'checksum verify failed|csum mismatch|bad tree block|read block failed|mirror' "$RW_TMP/check.out"; then
		rw_bad "btrfs check --readonly: $what: passed, but a block copy is bad"
		grep -iE 'checksum verify failed|csum mismatch|bad tree block|read block failed|mirror' "$RW_TMP/check.out" | head -n 10
		return 1
	fi
	if btrfs inspect-internal dump-super -a "$img" 2>/dev/null | grep -q "DON'T MATCH"; then
		rw_bad "btrfs check --readonly: $what: a superblock copy has a bad checksum"
		return 1
	fi
	rw_ok "btrfs check --readonly: $what"
}

# ---- kernel mounts ----

# rw_kmount IMG DIR [OPTS]: a new loop device (read-only for "ro") and the kernel's btrfs.
rw_kmount() {
	local img=$1 dir=$2 opts=${3:-}
	local loop ro=()
	[[ ,$opts, != *,ro,* ]] || ro=(-r)
	mkdir -p "$dir"
	ubt_attach "$img" "${ro[@]}" || rw_die "losetup $img"
	loop=$UBT_LOOP
	RW_KLOOP[$dir]=$loop
	if ! mount -t btrfs ${opts:+-o "$opts"} "$loop" "$dir"; then
		unset 'RW_KLOOP[$dir]'
		ubt_detach "$loop"
		rw_die "kernel mount of $img ${opts:+-o $opts}"
	fi
}

rw_kumount() {
	local dir=$1
	local loop=${RW_KLOOP[$dir]:-}
	umount "$dir" || rw_die "kernel umount $dir"
	unset 'RW_KLOOP[$dir]'
	[[ -z $loop ]] || ubt_detach "$loop"
}

# ---- FUSE mounts ----

# rw_fmount IMG DIR [OPTS]: `ubtrfs mount` read-write (the default); waits until mounted.
rw_fmount() {
	local img=$1 dir=$2 opts=${3:-}
	local log=$RW_TMP/fmount.log
	# The daemon's own messages (errors, a crash backtrace) land in daemon.log, shown on failure.
	opts=${opts:+$opts,}logfile=$RW_TMP/daemon.log
	mkdir -p "$dir"
	"$UBTRFS_BIN" mount -o "$opts" "$img" "$dir" </dev/null >"$log" 2>&1 ||
		{ cat "$log"; rw_die "ubtrfs mount ${opts:+-o $opts }$img"; }
	ubt_wait_until "$RW_WAIT_SECS" mountpoint -q "$dir" || rw_die "$dir: not mounted"
	RW_FPIDS[$dir]=$(ubt_pids_with_arg "$dir" | tr '\n' ' ')
	[[ -n ${RW_FPIDS[$dir]// /} ]] || rw_die "no daemon found for $dir"
}

# rw_fumount DIR: `ubtrfs umount`, then wait until the daemon has exited.
rw_fumount() {
	local dir=$1
	local pids=${RW_FPIDS[$dir]:-}
	"$UBTRFS_BIN" umount "$dir" >"$RW_TMP/fumount.log" 2>&1 ||
		{ cat "$RW_TMP/fumount.log"; rw_die "ubtrfs umount $dir"; }
	ubt_wait_until "$RW_WAIT_SECS" ubt_pids_gone "$pids" || rw_die "daemon $pids of $dir still running"
	! mountpoint -q "$dir" || rw_die "$dir still mounted after ubtrfs umount"
	unset 'RW_FPIDS[$dir]'
}

# ---- comparisons ----

# rw_manifest_dir DIR OUT
rw_manifest_dir() {
	"$MANIFEST" dir "$1" >"$2" 2>"$2.err" || { cat "$2.err"; rw_die "manifest dir $1"; }
}

# rw_same A B WHAT: two manifests must be identical.
rw_same() {
	if cmp -s "$1" "$2"; then
		rw_ok "$3 ($(wc -l <"$1") entries)"
	else
		rw_bad "$3"
		diff -u "$1" "$2" | head -n 40
		return 1
	fi
}

# rw_loose IN OUT: a manifest without what differs between two filesystems that saw the same
# operations at different times (mtime), and directory size and nlink (filesystem specific).
rw_loose() {
	awk '{ $7 = "-"; if ($2 == "dir") { $6 = "-"; $8 = "-" } print }' "$1" >"$2"
}

# rw_bg CMD...: start CMD in the background, recorded for cleanup; the pid is in RW_LASTPID.
rw_bg() {
	"$@" &
	RW_LASTPID=$!
	RW_BGPIDS+=("$RW_LASTPID")
}

rw_finish() {
	if ((RW_FAILS)); then
		echo "FAILED: $RW_FAILS check(s)"
		exit 1
	fi
	echo "PASS"
}

rw_cleanup() {
	local rc=$? dir loop pid
	set +e
	if [[ ($rc != 0 || $RW_FAILS != 0) && -s $RW_TMP/daemon.log ]]; then
		echo "--- the ubtrfs daemons' log (last 60 lines):"
		tail -n 60 "$RW_TMP/daemon.log"
	fi
	for pid in "${RW_BGPIDS[@]}"; do
		ubt_pid_alive "$pid" && kill "$pid" 2>/dev/null
	done
	for dir in "${!RW_FPIDS[@]}"; do
		if mountpoint -q "$dir"; then
			"$UBTRFS_BIN" umount "$dir" >/dev/null 2>&1 || fusermount3 -u -z "$dir" 2>/dev/null
		fi
		ubt_wait_until 30 ubt_pids_gone "${RW_FPIDS[$dir]}" ||
			for pid in ${RW_FPIDS[$dir]}; do ubt_pid_alive "$pid" && kill -9 "$pid" 2>/dev/null; done
	done
	for dir in "${!RW_KLOOP[@]}"; do
		umount "$dir" 2>/dev/null || umount -l "$dir" 2>/dev/null
	done
	for loop in "${UBT_LOOPS[@]}"; do
		losetup -d "$loop" 2>/dev/null
	done
	if [[ -n $RW_TMP && -d $RW_TMP ]]; then
		if [[ -n ${UBT_KEEP_TMP:-} ]]; then
			echo "keeping $RW_TMP"
		elif ! grep -q " $RW_TMP" /proc/mounts; then
			rm -rf "$RW_TMP"
		fi
	fi
	exit "$rc"
}
