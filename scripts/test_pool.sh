#!/usr/bin/env bash
# shellcheck shell=bash
#
# The whole test suite, test binaries run side by side: sourced by scripts/test.sh (which sets
# up PATH and the DBBACKUP_TEST_* variables first), then
#
#     run_test_pool JOBS [-- ARGS FOR EVERY TEST BINARY]
#
# builds every test target once (`cargo test --no-run --all-targets`, the executables read from
# cargo's JSON messages) and runs the test binaries JOBS at a time, the slowest first. Most of a
# test binary's time is spent waiting for PostgreSQL servers and child processes (initdb,
# pg_ctl, pg_dump, restores), so overlapping binaries fills the CPUs that one binary leaves idle.
# Each binary owns its throwaway clusters and S3 store (tests/support), so binaries do not
# share state.
#
# Like `cargo test --no-fail-fast`: every binary runs even when others fail, and the exit status
# is non-zero when any failed. A binary's output (stdout and stderr) goes to a file and is
# printed whole when the binary ends, so outputs do not interleave; a summary of every binary's
# time and result closes the run.

# Test binaries (file stems under tests/) in decreasing order of their run time, measured in CI
# (seconds in a serial run on 2 CPUs): started first so that the longest one does not start
# last and leave the run waiting on it alone. Binaries not listed follow in cargo's order.
SLOW_TEST_BINARIES=(
	matrix           # ~250 s
	regression       # ~230 s
	backup_filters   # ~150 s
	contents         # ~130 s
	restore_filters  # ~100 s
	memory           # ~90 s
	encryption       # ~75 s
	native_roundtrip # ~70 s
	s3               # ~70 s
	pgdump_strategies # ~65 s
	s3_outage        # ~58 s
	faults           # ~51 s
	standby          # ~45 s
	archive_toc      # ~60 s (servers 13-18)
)

# _pool_executables CARGO_JSON : print "LABEL<TAB>EXECUTABLE" for every test executable in
# cargo's --message-format=json output: LABEL is the target's source file relative to the
# repository (tests/NAME.rs, src/lib.rs, src/main.rs), as `cargo test` names it.
_pool_executables() {
	local root line exe src
	root=$(repo_root)
	while IFS= read -r line; do
		# A test executable has "test":true in its *profile*; the dbbackup binary the integration
		# tests run has it only in its target description (its target may be tested), not there.
		[[ $line == *'"reason":"compiler-artifact"'* && $line =~ \"profile\":\{[^}]*\"test\":true\} ]] ||
			continue
		[[ $line =~ \"executable\":\"([^\"]+)\" ]] || continue
		exe=${BASH_REMATCH[1]}
		[[ $line =~ \"src_path\":\"([^\"]+)\" ]] || continue
		src=${BASH_REMATCH[1]}
		printf '%s\t%s\n' "${src#"$root"/}" "$exe"
	done <"$1"
}

# _pool_order : reads "LABEL<TAB>EXECUTABLE" lines, prints them slowest first
# (SLOW_TEST_BINARIES), then the rest in their order.
_pool_order() {
	local -a lines=()
	local line name
	mapfile -t lines
	for name in "${SLOW_TEST_BINARIES[@]}"; do
		for line in "${lines[@]}"; do
			[[ ${line%%$'\t'*} == "tests/$name.rs" ]] && printf '%s\n' "$line"
		done
	done
	for line in "${lines[@]}"; do
		name=${line%%$'\t'*}
		name=${name#tests/}
		name=${name%.rs}
		[[ " ${SLOW_TEST_BINARIES[*]} " == *" $name "* ]] || printf '%s\n' "$line"
	done
}

# run_test_pool JOBS [-- ARGS...] : see the file header.
run_test_pool() {
	local jobs=$1
	shift
	local -a test_args=()
	if [[ $# -gt 0 ]]; then
		[[ $1 == -- ]] || die "run_test_pool: expected -- before the test binaries' arguments, got $1"
		shift
		test_args=("$@")
	fi
	local root work
	root=$(repo_root)
	work=$(mktemp -d "${TMPDIR:-/tmp}/dbbackup-test-pool.XXXXXX")

	log "cargo test --no-run --all-targets (build every test binary once)"
	cargo test --no-run --all-targets --message-format=json-render-diagnostics >"$work/build.json" ||
		die "building the tests failed"
	local -a binaries=()
	mapfile -t binaries < <(_pool_executables "$work/build.json" | _pool_order)
	[[ ${#binaries[@]} -gt 0 ]] || die "cargo built no test executables (see $work/build.json)"
	log "running ${#binaries[@]} test binaries, $jobs at a time${test_args[*]:+, with arguments: ${test_args[*]}}"

	# pid -> index into binaries; per index: start time, exit status.
	local -A running=()
	local -a started=() status=() took=()
	local next=0 done_pid i rc label exe finished=0
	local t0=$SECONDS
	# Stop what is still running if we are interrupted; each binary's clusters have their own
	# watchdog that stops them when the binary dies.
	trap 'for p in "${!running[@]}"; do kill "$p" 2>/dev/null; done; exit 130' INT TERM
	while ((finished < ${#binaries[@]})); do
		while ((${#running[@]} < jobs && next < ${#binaries[@]})); do
			exe=${binaries[next]#*$'\t'}
			# cargo runs test binaries in the package root; so do we.
			(cd "$root" && exec "$exe" "${test_args[@]}") >"$work/$next.log" 2>&1 </dev/null &
			running[$!]=$next
			started[next]=$SECONDS
			next=$((next + 1))
		done
		rc=0
		wait -n -p done_pid "${!running[@]}" || rc=$?
		i=${running[$done_pid]}
		unset "running[$done_pid]"
		status[i]=$rc
		took[i]=$((SECONDS - started[i]))
		finished=$((finished + 1))
		label=${binaries[i]%%$'\t'*}
		exe=${binaries[i]#*$'\t'}
		printf '\n     Running %s (%s): %s after %d s, %d of %d done\n' "$label" "${exe#"$root"/}" \
			"$([[ $rc -eq 0 ]] && echo ok || echo "FAILED (exit status $rc)")" "${took[i]}" \
			"$finished" "${#binaries[@]}"
		cat "$work/$i.log"
	done
	trap - INT TERM

	local failed=()
	printf '\n     Summary (%d s in all, %d binaries, %d at a time):\n' "$((SECONDS - t0))" \
		"${#binaries[@]}" "$jobs"
	for i in "${!binaries[@]}"; do
		label=${binaries[i]%%$'\t'*}
		printf '%8s %5d s  %s\n' "$([[ ${status[i]} -eq 0 ]] && echo ok || echo FAILED)" \
			"${took[i]}" "$label"
		[[ ${status[i]} -eq 0 ]] || failed+=("$label")
	done
	rm -rf "$work"
	if [[ ${#failed[@]} -gt 0 ]]; then
		printf 'error: %d test binaries failed: %s\n' "${#failed[@]}" "${failed[*]}" >&2
		return 1
	fi
}
