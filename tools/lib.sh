# tools/lib.sh: shared by tools/test.sh, tools/demo.sh and bench/: install
# what is missing, build the extension, install it into a private copy of
# the PostgreSQL 15 binaries, and run a throwaway cluster from that copy as
# the postgres OS user.  Source it; do not run it.
#
# The private copy (about 50 MB, made in a second) means that running the
# tests or the demo never changes the server installed on the machine, and
# that several checkouts can test at once without loading each other's
# anonymize.so.

SYS_PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
PG_BIN=/usr/lib/postgresql/15/bin		# replaced by private_pg
TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Run a command as root (sudo when we are not root).
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# The OS user that owns clusters: postgres when we are root (PostgreSQL
# refuses to run as root), else ourselves.
cluster_user() { if [ "$(id -u)" = 0 ]; then echo postgres; else id -un; fi; }

# Run a command as the cluster user, keeping PG* variables.
as_pg() {
	local envs=("PATH=$PG_BIN:$PATH") v
	for v in PGHOST PGPORT PGDATABASE PGUSER; do
		[ -n "${!v:-}" ] && envs+=("$v=${!v}")
	done
	if [ "$(id -u)" = 0 ]; then
		runuser -u postgres -- env "${envs[@]}" "$@"
	else
		env "${envs[@]}" "$@"
	fi
}

# Install the Debian packages we need, only those missing.
ensure_deps() {
	local want=(postgresql-15 postgresql-server-dev-15 postgresql-contrib
		libipc-run-perl make gcc libpq-dev pkg-config)
	local missing=()
	for p in "${want[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
			missing+=("$p")
	done
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
			missing+=("$p")
	done
	if [ ${#missing[@]} -gt 0 ]; then
		log "installing ${missing[*]}"
		as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
		as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends "${missing[@]}" >/dev/null
	fi
	# Debian's postgresql-common may start a main cluster; we never use it.
}

# Copy the source tree (without build output) to $1, owned by the cluster
# user, so that builds and test results never write into the checkout.
stage_tree() {
	local dest=$1
	mkdir -p "$dest"
	(cd "$TOP" && tar --exclude=.git --exclude='*.o' --exclude='*.so' \
		--exclude=results --exclude=tmp_check --exclude=tmp_check_iso --exclude=output_iso \
		--exclude=log --exclude='bench/out' --exclude=./cli/pg_anonymize -cf - .) | (cd "$dest" && tar -xf -)
	if [ "$(id -u)" = 0 ]; then chown -R postgres: "$dest"; fi
}

# private_pg DIR: copy the installed PostgreSQL 15 (binaries, libraries,
# share) under DIR, keeping its layout so that the binaries find their
# files relative to themselves, and point PG_BIN at it.
private_pg() {
	local root=$1
	mkdir -p "$root/usr/lib/postgresql" "$root/usr/share/postgresql"
	cp -a /usr/lib/postgresql/15 "$root/usr/lib/postgresql/"
	cp -a /usr/share/postgresql/15 "$root/usr/share/postgresql/"
	if [ "$(id -u)" = 0 ]; then chown -R postgres: "$root"; fi
	PG_ROOT=$root
	PG_BIN=$root/usr/lib/postgresql/15/bin
}

# build_install DIR: build in DIR as the cluster user and install into the
# private copy made by private_pg.
build_install() {
	local dir=$1
	log "building in $dir"
	as_pg make -s -C "$dir" PG_CONFIG="$SYS_PG_CONFIG" >/dev/null
	as_pg make -s -C "$dir" PG_CONFIG="$SYS_PG_CONFIG" DESTDIR="$PG_ROOT" install >/dev/null
}

# A free TCP port on loopback.
free_port() {
	local p
	for p in $(seq 54400 54499); do
		if ! (echo >/dev/tcp/127.0.0.1/$p) 2>/dev/null; then echo $p; return; fi
	done
	echo 54399
}

# start_cluster DIR PORT [extra postgresql.conf lines...]
start_cluster() {
	local dir=$1 port=$2
	shift 2
	mkdir -p "$dir"
	if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
	as_pg initdb -D "$dir/data" -A trust -U postgres --no-sync -E UTF8 \
		--locale=C >/dev/null
	{
		echo "port = $port"
		echo "listen_addresses = '127.0.0.1'"
		echo "unix_socket_directories = '$dir'"
		echo "fsync = off"
		echo "shared_preload_libraries = 'anonymize'"
		echo "max_worker_processes = 16"
		for line in "$@"; do echo "$line"; done
	} | as_pg tee -a "$dir/data/postgresql.conf" >/dev/null
	as_pg pg_ctl -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null
	export PGHOST=$dir PGPORT=$port PGUSER=postgres
}

stop_cluster() {
	local dir=$1
	[ -d "$dir/data" ] && as_pg pg_ctl -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
}
