#!/usr/bin/env bash
# The project's test command: `bash scripts/test.sh [extra cargo test args]`.
#
# Works from any directory. Makes sure a Rust toolchain (cargo) and the
# PostgreSQL server binaries are present (installing Debian's postgresql
# package if needed; the integration tests start throwaway clusters with
# them), puts the PostgreSQL bin directory first on PATH, then runs
# `cargo test --all-targets` and exits with its status.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cd "$(repo_root)"
ensure_cargo
ensure_postgres
ensure_openssl
export PG_BINDIR="${PG_BINDIR:-$(pg_bindir)}"

log "cargo test --all-targets $* (PostgreSQL binaries from $PG_BINDIR)"
exec cargo test --all-targets "$@"
