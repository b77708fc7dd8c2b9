#!/usr/bin/env bash
# Many small tables (issue 20): dbbackup against pg_dump/pg_restore, one run.
#
#   bash scripts/bench.sh tables 10000     # 10,000 tables (~1 min to build)
#   bash scripts/bench.sh tables 100000    # 100,000 tables
#   bash scripts/bench-tables.sh N         # the same, called directly
#
# Environment: BENCH_DIR, BENCH_JOBS (J, default 2) and DBBACKUP as for
# scripts/bench.sh. The cluster is its own, BENCH_DIR/pg-tables, so that its
# lock table can grow without touching the main benchmark's cluster.
#
# Data set: database tables_N, built once and reused (marker file
# BENCH_DIR/pg-tables/dataset_tables_N): N tables tenant_S.t_NNNNNN spread
# over 8 schemas, each (id int PRIMARY KEY, k int NOT NULL, v text NOT NULL)
# with an index on k and 20 rows. One server-side DO block creates them,
# committing every 1000 tables.
#
# max_locks_per_transaction: pg_dump (and dbbackup) lock every table in one
# transaction, and the shared lock table holds max_locks_per_transaction *
# max_connections (100) locks, so the cluster gets 128 + N * 6 / 100
# (pg_dump's N table locks, restores' tables, TOAST tables and indexes, with
# room to spare); a cluster with less is raised with ALTER SYSTEM and
# restarted.
#
# Measurements, after one warm-up pass over every table and a CHECKPOINT
# before each:
#   dbbackup backup single --format native --parallel-tables J
#   dbbackup backup single                   (auto: the format it picks)
#   pg_dump -Fd -j J -Z 6,  pg_dump -Fc -Z 6
#   pg_dump --schema-only -Fc                (pg_dump's catalog phase alone)
#   dbbackup backup native -J --memory-limit 48MiB, and its memory line
#   dbbackup restore --jobs J --create of the native backup, and
#   pg_restore -j J of the -Fd dump into a fresh database; each restore is
#   checked: table and index count, total rows and sum(k) equal the source.
# Columns as in scripts/bench.sh, plus the number of files stored; ratios
# are to pg_dump -Fd -j J (backups) and pg_restore -j J (restores). The
# machine's load (uptime) is printed with the figures: on a shared machine
# they are indicative.
#
# Exit status: 0 when every measurement succeeded and both restores check
# out, 1 otherwise.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scripts/bench-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

NTAB=${1:-10000}
[[ $NTAB =~ ^[1-9][0-9]*$ ]] || die "bench tables: N must be a positive integer, not '$NTAB'"
(($# <= 1)) || die "bench tables: one argument (the number of tables), not $#"

ROOT=$(repo_root)
BENCH_DIR=${BENCH_DIR:-$ROOT/bench-work}
mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd -P)
if [[ -n ${DBBACKUP:-} && $DBBACKUP != /* ]]; then DBBACKUP=$PWD/$DBBACKUP; fi
cd "$ROOT"

JOBS=${BENCH_JOBS:-2}
[[ $JOBS =~ ^[1-9][0-9]*$ ]] || die "BENCH_JOBS must be a positive integer, not '$JOBS'"
SCHEMAS=8
ROWS=20
DB=tables_$NTAB
DATASET="v1 tables=$NTAB rows=$ROWS schemas=$SCHEMAS"
LOCKS=$((128 + NTAB * 6 / 100))

chmod 0755 "$BENCH_DIR"
PGDIR=$BENCH_DIR/pg-tables
OUT=$BENCH_DIR/out-tables
STAMP=$(date +%Y%m%d-%H%M%S)
REPORT=$BENCH_DIR/results-tables-$NTAB-$STAMP.txt
TSV=$BENCH_DIR/results-tables-$NTAB-$STAMP.tsv
# A CHECKPOINT first: a shutdown checkpoint of N tables' dirty buffers can
# outlast pg_ctl's wait, and the immediate stop that follows costs a crash
# recovery that fsyncs every file of the data directory at the next start.
trap 'psql -X -q -d postgres -c CHECKPOINT >/dev/null 2>&1 || true; stop_throwaway_cluster "$PGDIR"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ensure_postgres
ensure_time
DBB_OK=1
if [[ -z ${DBBACKUP:-} ]]; then
	ensure_cargo
	log "cargo build --release"
	if ! cargo build --release; then
		log "WARNING: cargo build --release failed: dbbackup rows will be n/a"
		DBB_OK=0
	fi
	DBBACKUP=${CARGO_TARGET_DIR:-$ROOT/target}/release/dbbackup
fi
if ((DBB_OK)) && [[ ! -x $DBBACKUP ]]; then
	log "WARNING: no executable $DBBACKUP: dbbackup rows will be n/a"
	DBB_OK=0
fi

start_tables_cluster() {
	start_throwaway_cluster "$PGDIR" \
		"shared_buffers = 512MB" \
		"max_wal_size = 8GB" \
		"checkpoint_timeout = 30min" \
		"max_connections = 100" \
		"max_locks_per_transaction = $LOCKS" \
		"recovery_init_sync_method = syncfs"
}
start_tables_cluster
if (($(qv -d postgres -c 'SHOW max_locks_per_transaction') < LOCKS)); then
	log "max_locks_per_transaction -> $LOCKS (restart)"
	q -d postgres -c "ALTER SYSTEM SET max_locks_per_transaction = $LOCKS"
	stop_throwaway_cluster "$PGDIR"
	start_tables_cluster
fi

# ----------------------------------------------------------------- data set
have_db() { [[ $(qv -d postgres -c "SELECT count(*) FROM pg_database WHERE datname = '$1'") == 1 ]]; }

if [[ -f $PGDIR/dataset_$DB && $(cat "$PGDIR/dataset_$DB") == "$DATASET" ]] && have_db "$DB"; then
	log "reusing data set $DB ($DATASET)"
else
	rm -f "$PGDIR/dataset_$DB"
	dropdb --if-exists "$DB"
	createdb "$DB"
	log "$DB: $NTAB tables of $ROWS rows in $SCHEMAS schemas"
	# COMMIT inside DO (autocommit psql): one round trip, bounded lock count.
	q -d "$DB" <<SQL
DO \$\$
DECLARE t text;
BEGIN
  FOR s IN 0..$((SCHEMAS - 1)) LOOP
    EXECUTE format('CREATE SCHEMA %I', 'tenant_' || s);
  END LOOP;
  FOR i IN 1..$NTAB LOOP
    t := format('%I.%I', 'tenant_' || (i % $SCHEMAS), 't_' || lpad(i::text, 6, '0'));
    EXECUTE 'CREATE TABLE ' || t || ' (id int PRIMARY KEY, k int NOT NULL, v text NOT NULL)';
    EXECUTE 'CREATE INDEX ON ' || t || ' (k)';
    EXECUTE 'INSERT INTO ' || t || format(' SELECT g, (g * 7) %% $ROWS + %s, %L || g
               FROM generate_series(1, $ROWS) g', i, 'row ' || i || '/');
    IF i % 1000 = 0 THEN COMMIT; END IF;
  END LOOP;
END
\$\$;
SQL
	# One database-wide command: vacuumdb -j would be two round trips per table.
	log "$DB: VACUUM (ANALYZE), CHECKPOINT"
	q -d "$DB" -c 'VACUUM (ANALYZE)'
	q -d postgres -c CHECKPOINT
	printf '%s\n' "$DATASET" >"$PGDIR/dataset_$DB"
fi

# ----------------------------------------------------------------- checks
# "tables/indexes/rows/sum(k)" of the tenant_ schemas of a database.
content() {
	qv -d "$1" <<'SQL'
SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind = 'r' AND n.nspname LIKE 'tenant\_%') || '/' ||
       (SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname LIKE 'tenant\_%') || '/' ||
       coalesce(sum(x[1]::text::bigint), 0) || '/' || coalesce(sum(x[2]::text::bigint), 0)
FROM (SELECT xpath('/row/*/text()',
                   query_to_xml(format('SELECT count(*) AS n, coalesce(sum(k), 0) AS s FROM %I.%I',
                                       n.nspname, c.relname), false, true, '')) AS x
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE c.relkind = 'r' AND n.nspname LIKE 'tenant\_%') t
SQL
}
SOURCE_CONTENT=$(content "$DB")
log "source $DB: tables/indexes/rows/sum(k) = $SOURCE_CONTENT"
FAILED=0
check_restore() {
	local got
	got=$(content "$1" 2>&1) || true
	if [[ $got == "$SOURCE_CONTENT" ]]; then
		log "restore check $1: ok ($got)"
	else
		log "restore check $1: MISMATCH: source [$SOURCE_CONTENT] restored [$got]"
		FAILED=1
	fi
	dropdb --if-exists "$1"
}

# ----------------------------------------------------------------- run
R1=${DB}_r_dbb
R2=${DB}_r_pgd
for db in "$R1" "$R2"; do dropdb --if-exists "$db"; done
rm -rf "$OUT"
mkdir -p "$OUT"
J=$JOBS
LOAD_BEFORE=$(uptime)
log "warm-up: count(*) of every table of $DB"
warm "$DB"

measure dbb_native tables "dbbackup backup native -j$J" - "$OUT/dbb-native" \
	"$DBBACKUP" backup single "$DB" --out "$OUT/dbb-native" --format native --parallel-tables "$J" --quiet
measure dbb_auto tables "dbbackup backup (auto)" - "$OUT/dbb-auto" \
	"$DBBACKUP" backup single "$DB" --out "$OUT/dbb-auto" --quiet
measure pgd_dir tables "pg_dump -Fd -j$J -Z6" - "$OUT/pgdump-dir" \
	pg_dump -Fd -j "$J" -Z 6 -f "$OUT/pgdump-dir" "$DB"
measure pgd_fc tables "pg_dump -Fc -Z6" - "$OUT/pgdump.custom" \
	pg_dump -Fc -Z 6 -f "$OUT/pgdump.custom" "$DB"
measure pgd_schema tables "pg_dump --schema-only -Fc" - "$OUT/pgdump-schema.custom" \
	pg_dump --schema-only -Fc -f "$OUT/pgdump-schema.custom" "$DB"
measure dbb_mem48 tables "dbbackup native -j$J --memory-limit 48MiB" - "$OUT/dbb-mem48" \
	"$DBBACKUP" backup single "$DB" --out "$OUT/dbb-mem48" --format native --parallel-tables "$J" \
	--memory-limit 48MiB --quiet

measure dbb_restore tables "dbbackup restore --jobs $J" - - \
	"$DBBACKUP" restore "$OUT/dbb-native" --dbname "$R1" --create --jobs "$J" --quiet
check_restore "$R1"
createdb "$R2"
measure pgr_dir tables "pg_restore -j$J (of -Fd)" - - \
	pg_restore -j "$J" -d "$R2" "$OUT/pgdump-dir"
check_restore "$R2"
LOAD_AFTER=$(uptime)

for id in "${ORDER[@]}"; do ok "$id" || FAILED=1; done

# manifest FIELD_EXPR DIR : one value of a backup's manifest.json, or "-".
manifest() {
	python3 -c 'import json, sys
m = json.load(open(sys.argv[2]))
print(eval(sys.argv[1], {"m": m}))' "$1" "$2/manifest.json" 2>/dev/null || echo -
}

# ----------------------------------------------------------------- report
row() {
	local id=$1
	if ok "$id"; then
		printf '%-46s %7s %7s %7s %8s %9s %7s\n' "${R_LABEL[$id]}" "${R_WALL[$id]}" \
			"${R_CPU[$id]}" "${R_SRV[$id]}" "$(mib $((R_RSS[$id] * 1024)))" \
			"$([[ -n ${R_SIZE[$id]} ]] && mib "${R_SIZE[$id]}" || echo -)" "${R_FILES[$id]:--}"
	else
		local why=${R_RC[$id]}
		[[ $why =~ ^[0-9]+$ ]] && why="exit $why"
		printf '%-46s %7s\n' "${R_LABEL[$id]}" "n/a ($why)"
	fi
}
# ratios BASE ID... : per ID, BASE/ID of wall, cpu, peak RSS, size, files.
ratios() {
	local base=$1 id
	shift
	printf '%-46s %7s %7s %8s %9s %7s\n' "${R_LABEL[$base]} / ..." wall cpu RSS size files
	for id in "$@"; do
		printf '%-46s %7s %7s %8s %9s %7s\n' "  ... ${R_LABEL[$id]}" "$(ratio "$base" "$id" R_WALL)" \
			"$(ratio "$base" "$id" R_CPU)" "$(ratio "$base" "$id" R_RSS)" \
			"$(ratio "$base" "$id" R_SIZE)" "$(ratio "$base" "$id" R_FILES)"
	done
}
{
	printf '\n============ dbbackup benchmark: %s tables, %s ============\n' "$NTAB" "$STAMP"
	printf 'machine: %s cores, %s MiB RAM; %s\n' "$(nproc)" \
		"$(awk '/MemTotal/ { printf "%d", $2 / 1024 }' /proc/meminfo)" "$(pg_ctl --version)"
	printf 'load before: %s\nload after:  %s\n' "$LOAD_BEFORE" "$LOAD_AFTER"
	printf '(a shared, loaded machine: the figures are indicative)\n'
	printf 'dbbackup: %s (git %s)\n' \
		"$( ((DBB_OK)) && "$DBBACKUP" --version 2>/dev/null | head -n 1 || echo unavailable)" \
		"$(git rev-parse --short HEAD 2>/dev/null || echo none)"
	printf 'data set: %s (%s MiB); J=%s; max_locks_per_transaction=%s\n' "$DATASET" \
		"$(mib "$(qv -d postgres -c "SELECT pg_database_size('$DB')")")" "$J" \
		"$(qv -d postgres -c 'SHOW max_locks_per_transaction')"
	printf 'source tables/indexes/rows/sum(k): %s\n\n' "$SOURCE_CONTENT"
	printf '%-46s %7s %7s %7s %8s %9s %7s\n' measurement "wall s" "cpu s" "srv cpu" "RSS MiB" "size MiB" files
	for id in "${ORDER[@]}"; do row "$id"; done
	printf '\n-- ratios (>1: dbbackup faster / leaner / smaller / fewer files) --\n'
	ratios pgd_dir dbb_native dbb_auto dbb_mem48 pgd_fc
	ratios pgr_dir dbb_restore
	printf '\nauto picked: %s\n' "$(manifest 'm["strategy"]["kind"]' "$OUT/dbb-auto")"
	printf 'native manifest.json: %s MiB\n' \
		"$(if [[ -f $OUT/dbb-native/manifest.json ]]; then mib "$(stat -c %s "$OUT/dbb-native/manifest.json")"; else echo -; fi)"
	printf -- '--memory-limit 48MiB: peak RSS %s MiB, planned %s MiB (manifest)\n' \
		"$(manifest '"%.1f" % (m["memory"]["peak_rss_bytes"] / 1048576)' "$OUT/dbb-mem48")" \
		"$(manifest '"%.1f" % (m["memory"]["planned_bytes"] / 1048576)' "$OUT/dbb-mem48")"
	printf 'restores checked (tables/indexes/rows/sum(k)): %s\n' "$([[ $FAILED == 0 ]] && echo ok || echo FAILED)"
} | tee "$REPORT"

{
	printf 'id\tlabel\texit\twall_s\tcpu_s\tserver_cpu_s\tpeak_rss_kib\tsize_bytes\tfiles\n'
	for id in "${ORDER[@]}"; do
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$id" "${R_LABEL[$id]}" "${R_RC[$id]}" \
			"${R_WALL[$id]:-}" "${R_CPU[$id]:-}" "${R_SRV[$id]:-}" "${R_RSS[$id]:-}" \
			"${R_SIZE[$id]:-}" "${R_FILES[$id]:-}"
	done
} >"$TSV"
printf '\nreport: %s\n        %s\n' "$REPORT" "$TSV"

if ((FAILED)); then
	printf 'bench tables: some measurements or restore checks failed (see above)\n' >&2
	exit 1
fi
