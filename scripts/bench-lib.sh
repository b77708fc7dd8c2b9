#!/usr/bin/env bash
# shellcheck shell=bash
#
# Helpers shared by the sections of scripts/bench.sh (the main benchmark and
# scripts/bench-tables.sh). Source it after scripts/lib.sh, once the
# throwaway cluster runs (server_ticks reads PG_THROWAWAY_DATA):
#
#   q / qv ARGS...          psql, stop on error / unaligned tuples only
#   warm DB                 count(*) of every table, matview and TOAST table
#   server_ticks            CPU ticks used so far by the postgres processes
#   measure ID SECTION LABEL SOURCE_DB OUTPUT_PATH|- CMD...
#                           run CMD under GNU time, keep the results in R_*
#                           (wall, cpu, server cpu, peak RSS, size, files)
#   ok ID / ratio A B ARRAY results of measure; NUM/DEN of one metric
#   mib BYTES               bytes as MiB with one decimal
#
# measure expects DBBACKUP and DBB_OK to be set by the caller (a dbbackup
# command with no binary is recorded as "no binary", not run).

# The R_* arrays and MAIN_FAILED are read by the sourcing script.
# shellcheck disable=SC2034
q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }
qv() { q -At "$@"; }

# Warm the page cache: count(*) of every table, matview and TOAST table.
warm() {
	q -At -d "$1" >/dev/null <<'SQL'
SELECT format('SELECT count(*) FROM %s', c.oid::regclass)
FROM pg_class c
WHERE c.relkind IN ('r', 'm', 't')
  AND c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
  AND c.relpersistence = 'p'
\gexec
SQL
}

# CPU ticks (user+sys) used so far by the server: the postmaster, its reaped
# children (cutime/cstime) and its live children.
CLK_TCK=$(getconf CLK_TCK)
server_ticks() {
	local pm f line total=0
	local -a a
	pm=$(head -n 1 "$PG_THROWAWAY_DATA/postmaster.pid")
	for f in /proc/[0-9]*/stat; do
		read -r line 2>/dev/null <"$f" || continue
		read -r -a a <<<"${line##*) }" # a[1]=ppid a[11..14]=utime stime cutime cstime
		if [[ $f == "/proc/$pm/stat" ]]; then
			total=$((total + a[11] + a[12] + a[13] + a[14]))
		elif [[ ${a[1]} == "$pm" ]]; then
			total=$((total + a[11] + a[12]))
		fi
	done
	printf '%s\n' "$total"
}

# Results, keyed by measurement id.
declare -A R_LABEL R_WALL R_CPU R_SRV R_RSS R_SIZE R_FILES R_RC
ORDER=()
MAIN_FAILED=0

# measure ID SECTION LABEL SOURCE_DB OUTPUT_PATH|- CMD...
# Warm SOURCE_DB, checkpoint, run CMD under GNU time, record the results.
measure() {
	local id=$1 section=$2 label=$3 src=$4 outpath=$5
	shift 5
	ORDER+=("$id")
	R_LABEL[$id]=$label
	R_SIZE[$id]="" R_FILES[$id]=""
	printf '\n--- %s\n    $ %s\n' "$label" "$*" >&2
	if [[ $1 == "$DBBACKUP" ]] && ((!DBB_OK)); then
		R_RC[$id]="no binary"
		[[ $section == main ]] && MAIN_FAILED=1
		return 0
	fi
	[[ $src == - ]] || warm "$src"
	q -d postgres -c CHECKPOINT
	local t0 t1
	t0=$(server_ticks)
	peak_rss_and_time "$@"
	sleep 0.5 # let the postmaster reap the backends
	t1=$(server_ticks)
	R_RC[$id]=$MEAS_RC
	R_WALL[$id]=$MEAS_WALL
	R_CPU[$id]=$MEAS_CPU
	R_RSS[$id]=$MEAS_RSS_KIB
	R_SRV[$id]=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", d / hz }')
	if [[ $outpath != - && -e $outpath ]]; then
		# Bytes of the files, not du's: a directory's own 4 KiB would count
		# 40 MB at 10,000 table directories.
		R_SIZE[$id]=$(find "$outpath" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
		R_FILES[$id]=$(find "$outpath" -type f | wc -l)
	fi
	if [[ $MEAS_RC != 0 && $section == main ]]; then MAIN_FAILED=1; fi
}

ok() { [[ ${R_RC[$1]:-x} == 0 ]]; }

# ratio NUM_ID DEN_ID ARRAY_NAME : NUM/DEN of one metric, or n/a.
ratio() {
	local -n arr=$3
	if ok "$1" && ok "$2" && [[ -n ${arr[$1]:-} && -n ${arr[$2]:-} ]]; then
		awk -v a="${arr[$1]}" -v b="${arr[$2]}" \
			'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "n/a" }'
	else
		printf 'n/a'
	fi
}

mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
