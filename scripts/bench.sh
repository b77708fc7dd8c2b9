#!/usr/bin/env bash
# Benchmark dbbackup against pg_dump/pg_restore on one machine, in one run.
#
#   bash scripts/bench.sh                  # full size: ~1.2 GB database
#   BENCH_SCALE=2 bash scripts/bench.sh    # smoke test: a few tens of MB
#   bash scripts/bench.sh tables 10000     # many small tables (issue 20):
#                                          # scripts/bench-tables.sh, see there
#
# Environment (all optional):
#   BENCH_DIR=DIR    work directory, default bench-work/ at the repo root.
#                    Holds the throwaway cluster (DIR/pg), which is built once
#                    and reused while BENCH_SCALE stays the same, the backups
#                    of the last run (DIR/out) and the reports (DIR/results-*).
#   BENCH_JOBS=N     parallelism for every tool (default 2)
#   BENCH_SCALE=S    pgbench scale of `bench` (default 60, ~0.9 GB); the rest
#                    of the data set shrinks in proportion (see below)
#   DBBACKUP=PATH    dbbackup binary to use instead of `cargo build --release`
#   DBBACKUP_BEFORE=PATH  an older dbbackup binary: its native backups of bench
#                    and bench_big are measured in the same run (before/after)
#
# Data set (built by this script):
#   bench        pgbench -i -s S; table blobs(id, data bytea) of 64 KiB-1 MiB
#                values, 5*S MB in all (300 MB at S=60), half pseudo-random
#                (md5 bytes, incompressible), half repeat() (compressible);
#                5*S tables small_NNN of 100 rows each (300 at S=60)
#   bench_small  pgbench -i -s max(1, S/20) (3 at S=60, ~50 MB)
#   bench_big    three bytea values of 5*S MB each (300 MB at S=60), repetitive
#                content, STORAGE EXTERNAL: rows far larger than any buffer
#
# Measurements, each run once after a warm-up pass (SELECT count(*) over
# every table and TOAST table of the source) and a CHECKPOINT:
#   dbbackup backup (native, --parallel-tables N), dbbackup restore (--jobs N
#   --create), pg_dump -Fd -j N -Z 6, pg_restore -j N, pg_dump | zstd -T N -3,
#   dbbackup backup of bench_small; then --format plain/custom against
#   pg_dump | zstd -T0 -3 and pg_dump -Fc -Z 6; then the native backup and
#   its restore through a local SeaweedFS S3 server (s3://bench/...) beside
#   the directory runs above (wall, peak RSS, bytes sent = stored bytes);
#   and the native backup again, encrypted to one age recipient (--recipient),
#   and its restore, beside the unencrypted ones; then memory: bench and
#   bench_big backed up and restored at the default --memory-limit (128MiB)
#   and at 64MiB, beside pg_dump -Fc / pg_restore of bench_big.
# Columns: wall seconds; client CPU (user+sys of the measured command and
# its children, GNU time); server CPU (user+sys of the postgres processes
# over the same interval, from /proc); peak RSS of the largest process of
# the measured command (GNU time %M); output size (bytes of its files).
# Page caches cannot be dropped here, so numbers are warm-cache numbers.
#
# Exit status: 0 when every measurement of the main section succeeded and
# the restored databases look right, 1 otherwise (failed measurements are
# shown as "n/a (exit N)"; the format section may fail without affecting
# the exit status). The server is always stopped on exit.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scripts/bench-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

# Sections: none (this file's benchmark) or `tables N` (its own data set and
# cluster, in scripts/bench-tables.sh).
case ${1:-} in
"") ;;
tables)
	shift
	exec bash "$(dirname "${BASH_SOURCE[0]}")/bench-tables.sh" "$@"
	;;
*) die "bench.sh: unknown section '$1' (none for the main benchmark, or: tables N)" ;;
esac

ROOT=$(repo_root)
# Paths given in the environment are relative to the caller's directory.
BENCH_DIR=${BENCH_DIR:-$ROOT/bench-work}
mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd -P)
if [[ -n ${DBBACKUP:-} && $DBBACKUP != /* ]]; then DBBACKUP=$PWD/$DBBACKUP; fi
cd "$ROOT"

JOBS=${BENCH_JOBS:-2}
SCALE=${BENCH_SCALE:-60}
[[ $JOBS =~ ^[1-9][0-9]*$ ]] || die "BENCH_JOBS must be a positive integer, not '$JOBS'"
[[ $SCALE =~ ^[1-9][0-9]*$ ]] || die "BENCH_SCALE must be a positive integer, not '$SCALE'"
BLOB_MB=$((SCALE * 5))
SMALL_TABLES=$((SCALE * 5))
SMALL_SCALE=$((SCALE / 20 > 1 ? SCALE / 20 : 1))
DATASET="v1 scale=$SCALE blob_mb=$BLOB_MB small_tables=$SMALL_TABLES small_scale=$SMALL_SCALE"

chmod 0755 "$BENCH_DIR" # the postgres user must reach $BENCH_DIR/pg
PGDIR=$BENCH_DIR/pg
OUT=$BENCH_DIR/out
STAMP=$(date +%Y%m%d-%H%M%S)
REPORT=$BENCH_DIR/results-$STAMP.txt
TSV=$BENCH_DIR/results-$STAMP.tsv

S3DIR=$BENCH_DIR/s3
trap 'stop_throwaway_cluster "$PGDIR"; stop_seaweedfs "$S3DIR"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ----------------------------------------------------------------- tools
ensure_postgres
ensure_time
ensure_zstd
ensure_seaweedfs
ensure_age
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
if [[ -n ${DBBACKUP_BEFORE:-} && $DBBACKUP_BEFORE != /* ]]; then DBBACKUP_BEFORE=$PWD/$DBBACKUP_BEFORE; fi
if ((DBB_OK)) && [[ ! -x $DBBACKUP ]]; then
	log "WARNING: no executable $DBBACKUP: dbbackup rows will be n/a"
	DBB_OK=0
fi

# ----------------------------------------------------------------- cluster
# Settings of a modest dedicated server; applied when the cluster is created.
start_throwaway_cluster "$PGDIR" \
	"shared_buffers = 1GB" \
	"maintenance_work_mem = 512MB" \
	"work_mem = 32MB" \
	"max_wal_size = 8GB" \
	"checkpoint_timeout = 30min" \
	"max_connections = 100" \
	"max_locks_per_transaction = 128"

# ----------------------------------------------------------------- data set
build_dataset() {
	local db
	for db in bench bench_small bench_restore_dbb bench_restore_pgd; do
		dropdb --if-exists "$db"
	done
	rm -f "$PGDIR/dataset"

	log "bench: pgbench -i -s $SCALE"
	createdb bench
	pgbench -i -q -s "$SCALE" bench

	local rows=$(((BLOB_MB * 1048576 + 557055) / 557056)) # mean value 544 KiB
	log "bench: blobs, $rows values, ~$BLOB_MB MB"
	# Value i has 64 KiB * (1 + (i/2 * 7) % 16) bytes: 64 KiB..1 MiB, pairs
	# (2k, 2k+1) of equal size, odd ids pseudo-random, even ids repetitive.
	# STORAGE EXTERNAL keeps TOAST uncompressed, so disk size = logical size.
	q -d bench -v rows="$rows" <<'SQL'
CREATE TABLE blobs (id int PRIMARY KEY, data bytea);
ALTER TABLE blobs ALTER COLUMN data SET STORAGE EXTERNAL;
INSERT INTO blobs
SELECT s.i,
       CASE WHEN s.i % 2 = 1 THEN
         (SELECT decode(string_agg(md5(s.i::text || ':' || g::text), '' ORDER BY g), 'hex')
            FROM generate_series(1, s.sz / 16) AS g)
       ELSE
         substring(convert_to(repeat('dbbackup compressible value ' || s.i || '; ',
                                     s.sz / 28 + 1), 'UTF8') FROM 1 FOR s.sz)
       END
FROM (SELECT i, 65536 * (1 + ((i / 2) * 7) % 16) AS sz
        FROM generate_series(1, :rows) AS i) AS s;
SQL

	log "bench: $SMALL_TABLES small tables of 100 rows"
	q -d bench <<SQL
DO \$\$
BEGIN
  FOR k IN 1..$SMALL_TABLES LOOP
    EXECUTE format('CREATE TABLE %I (id int PRIMARY KEY, name text NOT NULL,
                    amount numeric(12,2), created timestamptz, tags text[])',
                   'small_' || lpad(k::text, 3, '0'));
    EXECUTE format('INSERT INTO %I SELECT g, %L || g, g * 1.25,
                    timestamptz ''2024-01-01 00:00+00'' + g * interval ''1 minute'',
                    ARRAY[''t'' || g %% 7, ''u'' || g %% 3] FROM generate_series(1, 100) g',
                   'small_' || lpad(k::text, 3, '0'), 'row ' || k || '/');
  END LOOP;
END
\$\$;
SQL

	log "bench_small: pgbench -i -s $SMALL_SCALE"
	createdb bench_small
	pgbench -i -q -s "$SMALL_SCALE" bench_small

	log "VACUUM ANALYZE, CHECKPOINT"
	q -d bench -c 'VACUUM ANALYZE'
	q -d bench_small -c 'VACUUM ANALYZE'
	q -d postgres -c 'CHECKPOINT'
	printf '%s\n' "$DATASET" >"$PGDIR/dataset"
}

have_db() { [[ $(qv -d postgres -c "SELECT count(*) FROM pg_database WHERE datname = '$1'") == 1 ]]; }

if [[ -f $PGDIR/dataset && $(cat "$PGDIR/dataset") == "$DATASET" ]] &&
	have_db bench && have_db bench_small; then
	log "reusing data set in $PGDIR ($DATASET)"
else
	build_dataset
fi
for db in bench_restore_dbb bench_restore_pgd; do dropdb --if-exists "$db"; done

db_size() { qv -d postgres -c "SELECT pg_database_size('$1')"; }
BENCH_BYTES=$(db_size bench)
SMALL_BYTES=$(db_size bench_small)

BIG_MB=$((SCALE * 5))
if [[ $(qv -d postgres -c "SELECT count(*) FROM pg_database WHERE datname = 'bench_big'") != 1 ||
	$(cat "$PGDIR/dataset_big" 2>/dev/null) != "$BIG_MB" ]]; then
	log "bench_big: three bytea values of $BIG_MB MB"
	dropdb --if-exists bench_big
	createdb bench_big
	q -d bench_big <<SQL
CREATE TABLE big (id int PRIMARY KEY, data bytea);
ALTER TABLE big ALTER COLUMN data SET STORAGE EXTERNAL;
INSERT INTO big SELECT i, convert_to(repeat(md5(i::text), $BIG_MB * 1000 * 1000 / 32), 'UTF8')
  FROM generate_series(1, 3) i;
SQL
	q -d bench_big -c 'VACUUM ANALYZE'
	printf '%s\n' "$BIG_MB" >"$PGDIR/dataset_big"
fi

# check_restore SOURCE_DB RESTORED_DB : cheap sanity check of a restore.
check_restore() {
	local sql="SELECT (SELECT count(*) FROM pg_class c WHERE c.relkind = 'r'
	                     AND c.relnamespace = 'public'::regnamespace),
	                  (SELECT count(*) FROM pgbench_accounts),
	                  (SELECT sum(abalance) FROM pgbench_accounts),
	                  (SELECT count(*) || '/' || sum(length(data)) || '/' ||
	                          md5(string_agg(md5(data), '' ORDER BY id)) FROM blobs)"
	local a b
	a=$(qv -d "$1" -c "$sql")
	b=$(qv -d "$2" -c "$sql" 2>&1) || true
	if [[ $a == "$b" ]]; then
		log "restore check $2: ok ($a)"
	else
		log "restore check $2: MISMATCH: source [$a] restored [$b]"
		MAIN_FAILED=1
	fi
}

# ----------------------------------------------------------------- run
rm -rf "$OUT"
mkdir -p "$OUT"
N=$JOBS

measure dbb_backup main "dbbackup backup native -j$N" bench "$OUT/dbb-native" \
	"$DBBACKUP" backup single bench --out "$OUT/dbb-native" --parallel-tables "$N" --quiet
measure dbb_restore main "dbbackup restore -j$N" - - \
	"$DBBACKUP" restore "$OUT/dbb-native" --dbname bench_restore_dbb --create --jobs "$N" --quiet
if ok dbb_restore; then check_restore bench bench_restore_dbb; fi
dropdb --if-exists bench_restore_dbb

measure pgd_dir main "pg_dump -Fd -j$N -Z6" bench "$OUT/pgdump-dir" \
	pg_dump -Fd -j "$N" -Z 6 -f "$OUT/pgdump-dir" bench
createdb bench_restore_pgd
measure pgd_restore main "pg_restore -j$N" - - \
	pg_restore -j "$N" -d bench_restore_pgd "$OUT/pgdump-dir"
if ok pgd_restore; then check_restore bench bench_restore_pgd; fi
dropdb --if-exists bench_restore_pgd

# shellcheck disable=SC2016 # $1/$2 expand in the inner bash
measure pgd_zstd main "pg_dump | zstd -T$N -3" bench "$OUT/pgdump.sql.zst" \
	bash -c 'set -o pipefail; pg_dump bench | zstd -q -T"$1" -3 -o "$2"' _ "$N" "$OUT/pgdump.sql.zst"

measure dbb_small main "dbbackup backup native -j$N (bench_small)" bench_small "$OUT/dbb-small" \
	"$DBBACKUP" backup single bench_small --out "$OUT/dbb-small" --parallel-tables "$N" --quiet

measure dbb_plain formats "dbbackup --format plain -j$N" bench "$OUT/dbb-plain" \
	"$DBBACKUP" backup single bench --out "$OUT/dbb-plain" --format plain --parallel-tables "$N" --quiet
# shellcheck disable=SC2016 # $1/$2 expand in the inner bash
measure pgd_zstd0 formats "pg_dump | zstd -T0 -3" bench "$OUT/pgdump-T0.sql.zst" \
	bash -c 'set -o pipefail; pg_dump bench | zstd -q -T0 -3 -o "$1"' _ "$OUT/pgdump-T0.sql.zst"
measure dbb_custom formats "dbbackup --format custom -j$N" bench "$OUT/dbb-custom" \
	"$DBBACKUP" backup single bench --out "$OUT/dbb-custom" --format custom --parallel-tables "$N" --quiet
measure pgd_fc formats "pg_dump -Fc -Z6" bench "$OUT/pgdump.custom" \
	pg_dump -Fc -Z 6 -f "$OUT/pgdump.custom" bench

AGEKEY=$BENCH_DIR/age-key.txt
rm -f "$AGEKEY"
age-keygen -o "$AGEKEY" 2>/dev/null
RECIPIENT=$(age-keygen -y "$AGEKEY")
measure dbb_age_backup age "dbbackup backup native -j$N encrypted" bench "$OUT/dbb-age" \
	"$DBBACKUP" backup single bench --out "$OUT/dbb-age" --parallel-tables "$N" --recipient "$RECIPIENT" --quiet
measure dbb_age_restore age "dbbackup restore -j$N encrypted" - - \
	"$DBBACKUP" restore "$OUT/dbb-age" --dbname bench_restore_age --create --jobs "$N" --identity "$AGEKEY" --quiet
if ok dbb_age_restore; then check_restore bench bench_restore_age; fi
dropdb --if-exists bench_restore_age

rm -rf "$S3DIR"
start_seaweedfs "$S3DIR" bench
S3LOC=s3://bench/native-$STAMP
measure dbb_s3_backup s3 "dbbackup backup native -j$N to S3" bench - \
	"$DBBACKUP" backup single bench --out "$S3LOC" --parallel-tables "$N" --quiet
if ok dbb_s3_backup; then
	# Bytes sent: what the store holds, as its manifest totals them.
	R_SIZE[dbb_s3_backup]=$(curl -sf "$SEAWEED_FILER/buckets/${S3LOC#s3://}/manifest.json" |
		python3 -c 'import json, sys; print(json.load(sys.stdin)["totals"]["stored_bytes"])' || echo "")
fi
measure dbb_s3_restore s3 "dbbackup restore -j$N from S3" - - \
	"$DBBACKUP" restore "$S3LOC" --dbname bench_restore_s3 --create --jobs "$N" --quiet
if ok dbb_s3_restore; then check_restore bench bench_restore_s3; fi
dropdb --if-exists bench_restore_s3

# Memory: the default limit (128MiB) is what the main section ran with.
if [[ -n ${DBBACKUP_BEFORE:-} ]]; then
	measure dbb_before memory "dbbackup BEFORE backup native -j$N" bench "$OUT/dbb-before" \
		"$DBBACKUP_BEFORE" backup single bench --out "$OUT/dbb-before" --parallel-tables "$N" --quiet
fi
measure dbb_mem64 memory "dbbackup backup -j$N --memory-limit 64MiB" bench "$OUT/dbb-mem64" \
	"$DBBACKUP" backup single bench --out "$OUT/dbb-mem64" --parallel-tables "$N" --memory-limit 64MiB --quiet
measure dbb_mem64_restore memory "dbbackup restore -j$N --memory-limit 64MiB" - - \
	"$DBBACKUP" restore "$OUT/dbb-mem64" --dbname bench_restore_mem --create --jobs "$N" --memory-limit 64MiB --quiet
if ok dbb_mem64_restore; then check_restore bench bench_restore_mem; fi
dropdb --if-exists bench_restore_mem

# bench_big: rows of BIG_MB each, four workers (more than the cores: the ceiling must hold).
big_check() { qv -d "$1" -c "SELECT string_agg(id || ':' || md5(data), ',' ORDER BY id) FROM big"; }
BIG_SUM=$(big_check bench_big)
big_restored() {
	if [[ $(big_check "$1" 2>&1) == "$BIG_SUM" ]]; then log "restore check $1: ok"; else
		log "restore check $1: MISMATCH"
		MAIN_FAILED=1
	fi
	dropdb --if-exists "$1"
}
if [[ -n ${DBBACKUP_BEFORE:-} ]]; then
	measure dbb_big_before memory "dbbackup BEFORE backup bench_big -j4" bench_big "$OUT/dbb-big-before" \
		"$DBBACKUP_BEFORE" backup single bench_big --out "$OUT/dbb-big-before" --format native --parallel-tables 4 --quiet
fi
measure dbb_big memory "dbbackup backup bench_big -j4" bench_big "$OUT/dbb-big" \
	"$DBBACKUP" backup single bench_big --out "$OUT/dbb-big" --format native --parallel-tables 4 --quiet
measure dbb_big64 memory "dbbackup backup bench_big -j4 --memory-limit 64MiB" bench_big "$OUT/dbb-big64" \
	"$DBBACKUP" backup single bench_big --out "$OUT/dbb-big64" --format native --parallel-tables 4 --memory-limit 64MiB --quiet
measure dbb_big_restore memory "dbbackup restore bench_big -j4" - - \
	"$DBBACKUP" restore "$OUT/dbb-big" --dbname bench_restore_big --create --jobs 4 --quiet
if ok dbb_big_restore; then big_restored bench_restore_big; fi
measure dbb_big64_restore memory "dbbackup restore bench_big -j4 --memory-limit 64MiB" - - \
	"$DBBACKUP" restore "$OUT/dbb-big64" --dbname bench_restore_big --create --jobs 4 --memory-limit 64MiB --quiet
if ok dbb_big64_restore; then big_restored bench_restore_big; fi
measure pgd_big memory "pg_dump -Fc -Z6 bench_big" bench_big "$OUT/pgdump-big.custom" \
	pg_dump -Fc -Z 6 -f "$OUT/pgdump-big.custom" bench_big
createdb bench_restore_big
measure pgr_big memory "pg_restore bench_big" - - \
	pg_restore -d bench_restore_big "$OUT/pgdump-big.custom"
if ok pgr_big; then big_restored bench_restore_big; fi
dropdb --if-exists bench_restore_big

# ----------------------------------------------------------------- report

row() {
	local id=$1
	if ok "$id"; then
		printf '%-42s %8s %8s %8s %9s %10s\n' "${R_LABEL[$id]}" "${R_WALL[$id]}" \
			"${R_CPU[$id]}" "${R_SRV[$id]}" "$(mib $((R_RSS[$id] * 1024)))" \
			"$([[ -n ${R_SIZE[$id]} ]] && mib "${R_SIZE[$id]}" || echo -)"
	else
		local why=${R_RC[$id]}
		[[ $why =~ ^[0-9]+$ ]] && why="exit $why"
		printf '%-42s %8s\n' "${R_LABEL[$id]}" "n/a ($why)"
	fi
}
header() {
	printf '%-42s %8s %8s %8s %9s %10s\n' "measurement" "wall s" "cpu s" "srv cpu" "RSS MiB" "size MiB"
}

{
	printf '\n==================== dbbackup benchmark %s ====================\n' "$STAMP"
	printf 'machine: %s cores, %s MiB RAM; %s; %s\n' "$(nproc)" \
		"$(awk '/MemTotal/ { printf "%d", $2 / 1024 }' /proc/meminfo)" \
		"$(pg_ctl --version)" "$(zstd --version | head -n 1 | tr -d '*' | sed 's/^ *//; s/,.*//')"
	printf 'dbbackup: %s (git %s)\n' \
		"$( ((DBB_OK)) && "$DBBACKUP" --version 2>/dev/null | head -n 1 || echo unavailable)" \
		"$(git rev-parse --short HEAD 2>/dev/null || echo none)"
	printf 'data set: %s; bench %s MiB, bench_small %s MiB; jobs N=%s\n' \
		"$DATASET" "$(mib "$BENCH_BYTES")" "$(mib "$SMALL_BYTES")" "$N"
	printf 'cpu s = user+sys of the command and its children; srv cpu = postgres processes;\n'
	printf 'RSS = peak of the largest single process of the command; warm page cache.\n'

	printf '\n-- main (N=%s) --\n' "$N"
	header
	for id in dbb_backup dbb_restore pgd_dir pgd_restore pgd_zstd dbb_small; do row "$id"; done

	printf '\n-- ratios (>1 means dbbackup is faster / smaller / leaner) --\n'
	printf '%-62s %s\n' \
		"backup wall: pg_dump -Fd -j$N -Z6 / dbbackup" "$(ratio pgd_dir dbb_backup R_WALL)" \
		"backup wall: pg_dump | zstd / dbbackup" "$(ratio pgd_zstd dbb_backup R_WALL)" \
		"restore wall: pg_restore -j$N / dbbackup restore" "$(ratio pgd_restore dbb_restore R_WALL)" \
		"round trip wall: pg_dump -Fd + pg_restore / dbbackup" \
		"$(if ok pgd_dir && ok pgd_restore && ok dbb_backup && ok dbb_restore; then
			awk -v a="${R_WALL[pgd_dir]}" -v b="${R_WALL[pgd_restore]}" \
				-v c="${R_WALL[dbb_backup]}" -v d="${R_WALL[dbb_restore]}" \
				'BEGIN { if (c + d > 0) printf "%.2fx", (a + b) / (c + d); else print "n/a" }'
		else echo n/a; fi)" \
		"backup client cpu: pg_dump -Fd / dbbackup" "$(ratio pgd_dir dbb_backup R_CPU)" \
		"backup server cpu: pg_dump -Fd / dbbackup" "$(ratio pgd_dir dbb_backup R_SRV)" \
		"backup size: pg_dump -Fd -Z6 / dbbackup" "$(ratio pgd_dir dbb_backup R_SIZE)" \
		"backup size: pg_dump | zstd -3 / dbbackup" "$(ratio pgd_zstd dbb_backup R_SIZE)" \
		"peak RSS: pg_dump -Fd / dbbackup" "$(ratio pgd_dir dbb_backup R_RSS)" \
		"peak RSS: dbbackup on bench / on bench_small (~flat is good)" "$(ratio dbb_backup dbb_small R_RSS)"

	printf '\n-- single-file formats --\n'
	header
	for id in dbb_plain pgd_zstd0 dbb_custom pgd_fc; do row "$id"; done
	printf '%-62s %s\n' \
		"plain wall: pg_dump | zstd -T0 -3 / dbbackup plain" "$(ratio pgd_zstd0 dbb_plain R_WALL)" \
		"plain size: pg_dump | zstd -T0 -3 / dbbackup plain" "$(ratio pgd_zstd0 dbb_plain R_SIZE)" \
		"custom wall: pg_dump -Fc -Z6 / dbbackup custom" "$(ratio pgd_fc dbb_custom R_WALL)" \
		"custom size: pg_dump -Fc -Z6 / dbbackup custom" "$(ratio pgd_fc dbb_custom R_SIZE)"
	printf '\n-- encryption (age, one X25519 recipient) --\n'
	header
	for id in dbb_backup dbb_age_backup dbb_restore dbb_age_restore; do row "$id"; done
	printf '%-62s %s\n' \
		"backup wall: encrypted / plain (target <= 1.10)" "$(ratio dbb_age_backup dbb_backup R_WALL)" \
		"backup cpu: encrypted / plain" "$(ratio dbb_age_backup dbb_backup R_CPU)" \
		"restore wall: encrypted / plain" "$(ratio dbb_age_restore dbb_restore R_WALL)"

	printf '\n-- object storage (local SeaweedFS; size = bytes sent) --\n'
	header
	for id in dbb_backup dbb_s3_backup dbb_restore dbb_s3_restore; do row "$id"; done
	printf '%-62s %s\n' \
		"backup wall: S3 / directory" "$(ratio dbb_s3_backup dbb_backup R_WALL)" \
		"restore wall: S3 / directory" "$(ratio dbb_s3_restore dbb_restore R_WALL)" \
		"peak RSS: S3 backup / directory backup" "$(ratio dbb_s3_backup dbb_backup R_RSS)" \
		"peak RSS: S3 restore / directory restore" "$(ratio dbb_s3_restore dbb_restore R_RSS)"
	if ok dbb_s3_backup && ok dbb_backup; then
		printf '%-62s %s MiB\n' "peak RSS: S3 backup - directory backup" \
			"$(mib $(((R_RSS[dbb_s3_backup] - R_RSS[dbb_backup]) * 1024)))"
	fi

	printf '\n-- memory (bench_big: three %s MB bytea values) --\n' "$BIG_MB"
	header
	for id in dbb_before dbb_backup dbb_mem64 dbb_restore dbb_mem64_restore \
		dbb_big_before dbb_big dbb_big64 dbb_big_restore dbb_big64_restore pgd_big pgr_big; do
		if [[ -n ${R_LABEL[$id]:-} ]]; then row "$id"; fi
	done
	printf '%-62s %s\n' \
		"backup wall: before / after (bench, same run)" "$(ratio dbb_before dbb_backup R_WALL)" \
		"backup wall: 128MiB / 64MiB limit (bench)" "$(ratio dbb_backup dbb_mem64 R_WALL)" \
		"peak RSS: bench_big backup before / after" "$(ratio dbb_big_before dbb_big R_RSS)" \
		"peak RSS: pg_dump -Fc / dbbackup 64MiB (bench_big)" "$(ratio pgd_big dbb_big64 R_RSS)" \
		"peak RSS: pg_restore / dbbackup restore 64MiB (bench_big)" "$(ratio pgr_big dbb_big64_restore R_RSS)"
} | tee "$REPORT"

{
	printf 'id\tlabel\texit\twall_s\tcpu_s\tserver_cpu_s\tpeak_rss_kib\tsize_bytes\n'
	for id in "${ORDER[@]}"; do
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$id" "${R_LABEL[$id]}" "${R_RC[$id]}" \
			"${R_WALL[$id]:-}" "${R_CPU[$id]:-}" "${R_SRV[$id]:-}" "${R_RSS[$id]:-}" "${R_SIZE[$id]:-}"
	done
} >"$TSV"
printf '\nreport: %s\n        %s\n' "$REPORT" "$TSV"

if ((MAIN_FAILED)); then
	printf 'bench: some main measurements failed (see n/a rows above)\n' >&2
	exit 1
fi
