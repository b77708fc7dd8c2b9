#!/usr/bin/env bash
# The project's test command:
#
#     bash scripts/test.sh                      the whole suite
#     bash scripts/test.sh -- FILTER/ARGS       the whole suite, ARGS given to every test binary
#     bash scripts/test.sh --test NAME [-- ...] one test binary (tests/NAME.rs)
#     bash scripts/test.sh CARGO-TEST-ARGS...   `cargo test --no-fail-fast` with these arguments
#
# Works from any directory. Makes sure a Rust toolchain (cargo) and the
# PostgreSQL server binaries are present: Debian's postgresql package (15,
# the whole suite runs on it), servers 13, 14, 16, 17, 18 and client tools
# 18 in the cache directory (tests/matrix.rs runs on them), and the SeaweedFS
# S3 server. The integration tests start throwaway servers with them. Puts
# the PostgreSQL 15 bin directory first on PATH.
#
# The whole suite (no arguments before `--`) is built once with
# `cargo test --no-run --all-targets`, then its test binaries run
# $DBBACKUP_TEST_JOBS at a time (default 3), slowest first, each one's output
# printed whole when it ends (scripts/test_pool.sh); like
# `cargo test --no-fail-fast`, all of them run and the exit status is non-zero
# if any failed. DBBACKUP_TEST_JOBS=1 runs plain
# `cargo test --no-fail-fast --all-targets`, one binary after another. With
# other arguments, it is `cargo test --no-fail-fast [--all-targets] ARGS` and
# exits with its status.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cd "$(repo_root)"
ensure_cargo
ensure_postgres
ensure_openssl
ensure_age
ensure_pg_matrix
ensure_seaweedfs
ensure_regress_sources
export PG_BINDIR="${PG_BINDIR:-$(pg_bindir)}"

# `--test NAME` (or --lib, --bin, --doc) picks the targets itself: then no --all-targets, which
# would build and run every test binary besides the one asked for.
targets=(--all-targets)
cargo_args=0
for arg in "$@"; do
	[[ $arg == -- ]] && break
	cargo_args=$((cargo_args + 1))
	case $arg in --test | --test=* | --lib | --bin | --bin=* | --doc) targets=() ;; esac
done
jobs=${DBBACKUP_TEST_JOBS:-3}
[[ $jobs =~ ^[1-9][0-9]*$ ]] || die "DBBACKUP_TEST_JOBS must be a positive number, not '$jobs'"
if [[ $jobs -gt 1 ]] && ((BASH_VERSINFO[0] * 100 + BASH_VERSINFO[1] < 501)); then
	log "bash $BASH_VERSION lacks wait -n -p (5.1): test binaries one at a time"
	jobs=1
fi
if [[ $cargo_args -eq 0 && $jobs -gt 1 ]]; then
	# shellcheck source=scripts/test_pool.sh
	. "$(dirname "${BASH_SOURCE[0]}")/test_pool.sh"
	log "the whole suite, $jobs test binaries at a time (PostgreSQL binaries from $PG_BINDIR)"
	run_test_pool "$jobs" "$@"
	exit
fi
log "cargo test --no-fail-fast ${targets[*]} $* (PostgreSQL binaries from $PG_BINDIR)"
# --no-fail-fast: one failing binary does not hide the results of the others.
exec cargo test --no-fail-fast "${targets[@]}" "$@"
