#!/usr/bin/env bash
# The project's test command: `bash scripts/test.sh [extra cargo test args]`
# (`bash scripts/test.sh --test NAME` runs one test binary).
#
# Works from any directory. Makes sure a Rust toolchain (cargo) and the
# PostgreSQL server binaries are present: Debian's postgresql package (15,
# the whole suite runs on it), servers 13, 14, 16, 17, 18 and client tools
# 18 in the cache directory (tests/matrix.rs runs on them), and the SeaweedFS
# S3 server. The integration tests start throwaway servers with them. Puts
# the PostgreSQL 15 bin directory first on PATH, then runs
# `cargo test --all-targets` and exits with its status.
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
for arg in "$@"; do
	case $arg in --test | --test=* | --lib | --bin | --bin=* | --doc) targets=() ;; esac
done
log "cargo test --no-fail-fast ${targets[*]} $* (PostgreSQL binaries from $PG_BINDIR)"
# --no-fail-fast: one failing binary does not hide the results of the others.
exec cargo test --no-fail-fast "${targets[@]}" "$@"
