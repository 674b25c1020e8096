#!/usr/bin/env bash
# test.sh — THE test command: install dependencies, build, and run every test twice, once in a
# normal build (build/) and once under AddressSanitizer + UndefinedBehaviorSanitizer
# (build-asan/, -DUBT_SANITIZE=ON). Exits non-zero if anything failed.
#
#   bash scripts/test.sh [--soak] [--no-deps] [--no-asan] [-R REGEX]
#
#   --soak      also run the long tests (CTest label "soak"); same as UBT_SOAK=1
#   --no-deps   do not run scripts/deps.sh
#   --no-asan   skip the sanitizer build
#   -R REGEX    only the tests whose name matches (passed to ctest)
#
# The kernel-oracle and FUSE suites need root, /dev/fuse and loop devices; without them they
# print SKIP and pass. Run as root on Debian 12 for the full run.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

soak=${UBT_SOAK:-}
deps=1
asan=1
ctest_filter=()
while [[ $# -gt 0 ]]; do
	case $1 in
	--soak) soak=1 ;;
	--no-deps) deps=0 ;;
	--no-asan) asan=0 ;;
	-R) ctest_filter=(-R "$2"); shift ;;
	-h | --help) sed -n '2,15p' "$0"; exit 0 ;;
	*) echo "test.sh: unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done

jobs=$(nproc 2>/dev/null || echo 2)
start=$SECONDS
logdir=$root/build/test-logs
summary=()
status=0

if [[ $deps -eq 1 ]]; then
	bash "$root/scripts/deps.sh"
fi

label_args=()
if [[ -n $soak ]]; then
	export UBT_SOAK=1
else
	label_args=(-LE soak)
fi

# build DIR CMAKE_ARGS...: configure and build; 1 on failure.
build() {
	local dir=$1
	shift
	echo "==> configure and build $dir" >&2
	cmake -S "$root" -B "$root/$dir" "$@" >"$logdir/$dir.configure.log" 2>&1 ||
		{ cat "$logdir/$dir.configure.log" >&2; return 1; }
	cmake --build "$root/$dir" -j"$jobs" >"$logdir/$dir.build.log" 2>&1 ||
		{ tail -n 60 "$logdir/$dir.build.log" >&2; return 1; }
}

# run_ctest DIR NAME: run the suite, keep the log, remember ctest's summary lines.
run_ctest() {
	local dir=$1 name=$2 rc=0
	local log="$logdir/ctest-$name.log"
	echo "==> ctest in $dir" >&2
	(cd "$root/$dir" && ctest --output-on-failure "${label_args[@]}" "${ctest_filter[@]}" </dev/null) 2>&1 |
		tee "$log" || rc=$?
	[[ $rc -eq 0 ]] || status=1
	summary+=("[$name] $(grep -E '^[0-9]+% tests passed' "$log" || echo "ctest did not finish (exit $rc)")")
	local failed
	failed=$(sed -n '/The following tests FAILED:/,$p' "$log" | grep -E '^\s+[0-9]+ - ' || true)
	[[ -z $failed ]] || summary+=("$(printf '%s\n' "$failed" | sed "s/^/[$name] FAILED/")")
	summary+=("[$name] $(grep -E '^Total Test time' "$log" || true)")
}

mkdir -p "$logdir"
if build build -DUBT_SANITIZE=OFF; then
	run_ctest build normal
else
	summary+=("[normal] BUILD FAILED (see $logdir/build.build.log)")
	status=1
fi

if [[ $asan -eq 1 ]]; then
	if build build-asan -DUBT_SANITIZE=ON; then
		# Leak checking where LSan can run (it cannot under ptrace, e.g. strace/gdb).
		export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:detect_stack_use_after_return=1}"
		export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
		# The sanitizers cost 2-4x: the normal run does the full-size workloads, this one
		# runs every test on smaller ones (unless --soak).
		if [[ -z $soak ]]; then
			export UBT_FSX_OPS=${UBT_FSX_OPS:-20000} UBT_SNAPSHOT_FILES=${UBT_SNAPSHOT_FILES:-5000}
		fi
		# ASan's shadow memory and quarantine inflate RSS several times; the normal run holds
		# the real bound (300 MiB).
		export UBT_RSS_LIMIT_MIB=${UBT_RSS_LIMIT_MIB:-1500}
		run_ctest build-asan asan
	else
		summary+=("[asan] BUILD FAILED (see $logdir/build-asan.build.log)")
		status=1
	fi
fi

# One closing line over both runs, in the plain form CI reads.
passed=0 failed=0
for log in "$logdir"/ctest-*.log; do
	[[ -e $log ]] || continue
	line=$(grep -E '^[0-9]+% tests passed, [0-9]+ tests failed out of [0-9]+' "$log" | tail -n 1 || true)
	[[ -n $line ]] || continue
	f=$(sed -E 's/.* ([0-9]+) tests failed out of ([0-9]+).*/\1/' <<<"$line")
	t=$(sed -E 's/.* ([0-9]+) tests failed out of ([0-9]+).*/\2/' <<<"$line")
	failed=$((failed + f))
	passed=$((passed + t - f))
done
echo
echo "==== test summary ($(((SECONDS - start) / 60))m$(((SECONDS - start) % 60))s)"
printf '%s\n' "${summary[@]}"
if [[ $status -eq 0 ]]; then
	echo "ALL TESTS PASSED"
else
	echo "SOME TESTS FAILED"
fi
echo "$passed passed, $failed failed"
exit $status
