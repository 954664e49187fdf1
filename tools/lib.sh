# tools/lib.sh: shared by tools/test.sh, tools/demo.sh and bench/: install
# what is missing, build the extension, install it into a private copy of
# the PostgreSQL binaries, and run a throwaway cluster from that copy as
# the postgres OS user; make and enter the Debian roots that carry
# PostgreSQL 17 and 18.  Source it; do not run it.
#
# The private copy (about 50 MB, made in a second) means that running the
# tests or the demo never changes the server installed on the machine, and
# that several checkouts can test at once without loading each other's
# anonymize.so.
#
# PG_MAJOR (default 15, the machine's own) says which PostgreSQL the
# functions below build for; inside a Debian root tools/test.sh sets it to
# that root's version.

# use_pg VERSION: build and run with PostgreSQL VERSION (Debian's layout).
use_pg() {
	PG_MAJOR=$1
	SYS_PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config
	PG_BIN=/usr/lib/postgresql/$PG_MAJOR/bin		# replaced by private_pg
}
use_pg "${PG_MAJOR:-15}"
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
		# wait for another apt-get (another run, another checkout) to finish
		local wait=(-o DPkg::Lock::Timeout=600)
		as_root flock /var/lock/anonymize-apt.lock env DEBIAN_FRONTEND=noninteractive \
			apt-get "${wait[@]}" update -qq || return 1
		as_root flock /var/lock/anonymize-apt.lock env DEBIAN_FRONTEND=noninteractive \
			apt-get "${wait[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
			return 1
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

# private_pg DIR: copy the installed PostgreSQL $PG_MAJOR (binaries, libraries,
# share) under DIR, keeping its layout so that the binaries find their
# files relative to themselves, and point PG_BIN at it.
private_pg() {
	local root=$1
	mkdir -p "$root/usr/lib/postgresql" "$root/usr/share/postgresql"
	cp -a "/usr/lib/postgresql/$PG_MAJOR" "$root/usr/lib/postgresql/"
	cp -a "/usr/share/postgresql/$PG_MAJOR" "$root/usr/share/postgresql/"
	if [ "$(id -u)" = 0 ]; then chown -R postgres: "$root"; fi
	PG_ROOT=$root
	PG_BIN=$root/usr/lib/postgresql/$PG_MAJOR/bin
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
	init_cluster "$@"
	as_pg pg_ctl -D "$1/data" -l "$1/server.log" -w -t 60 start >/dev/null
	export PGHOST=$1 PGPORT=$2 PGUSER=postgres
}

# init_cluster DIR PORT [extra postgresql.conf lines...]: the cluster of
# start_cluster, not started
init_cluster() {
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
}

stop_cluster() {
	local dir=$1
	[ -d "$dir/data" ] && as_pg pg_ctl -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
}

# ---------------------------------------------------------------------
# Debian roots for the PostgreSQL versions the machine does not carry
# ---------------------------------------------------------------------
#
# PostgreSQL 17 comes from Debian 13 (trixie), 18 from unstable (sid), each
# in a minimal Debian root made once with debootstrap under the cache
# directory and reused; a root is complete when its marker file exists (a
# half-made one is made again).  Commands run in it with chroot, with /proc
# and a tmpfs on /dev/shm (PostgreSQL's shared memory) mounted while any run
# uses the root.

ANONYMIZE_CACHE=${ANONYMIZE_CACHE:-/var/cache/anonymize}
ROOT_MARKER=.anonymize-root-complete

# The Debian release whose packages carry PostgreSQL $1.
root_suite() {
	case $1 in
	17) echo trixie ;;
	18) echo sid ;;
	*) echo "no Debian root for PostgreSQL $1" >&2; return 1 ;;
	esac
}

# The directory of the root for PostgreSQL $1.
root_dir() { echo "$ANONYMIZE_CACHE/roots/pg$1-$(root_suite "$1")"; }

# The Debian mirror this machine's apt uses, read from its sources at run
# time (never written into the repository).
debian_mirror() {
	{
		awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }' \
			/etc/apt/sources.list.d/*.sources 2>/dev/null
		awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) { print $i; break } }' \
			/etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null
	} | grep -E '/debian/?$' | head -1
}

# root_mount DIR: mount what PostgreSQL needs in the root, unless another
# run has already; every user holds a shared lock, so that root_umount
# leaves the mounts to the last one.
root_mount() {
	local dir=$1 key
	key=$(basename "$dir")
	exec {ROOT_GUARD}>"$ANONYMIZE_CACHE/roots/.$key.mount"
	flock -x "$ROOT_GUARD"
	exec {ROOT_USERS}>"$ANONYMIZE_CACHE/roots/.$key.users"
	flock -s "$ROOT_USERS"
	mountpoint -q "$dir/proc" || mount -t proc proc "$dir/proc"
	mkdir -p "$dir/dev/shm"
	mountpoint -q "$dir/dev/shm" || mount -t tmpfs -o mode=1777,size=1g shm "$dir/dev/shm"
	# the CLI's progress bar is tested on a pseudo-terminal
	mkdir -p "$dir/dev/pts"
	mountpoint -q "$dir/dev/pts" || mount --bind /dev/pts "$dir/dev/pts"
	flock -u "$ROOT_GUARD"
	ROOT_MOUNTED=$dir
	# what failed runs left in the root, after a day
	find "$dir/tmp" -mindepth 1 -maxdepth 1 -name 'anonymize-*' -mmin +1440 \
		-exec rm -rf --one-file-system {} + 2>/dev/null || true
}

# root_umount: undo root_mount (safe to call twice, and when nothing was
# mounted); unmounts only when no other run still uses the root.
root_umount() {
	local dir=${ROOT_MOUNTED:-}
	[ -n "$dir" ] || return 0
	ROOT_MOUNTED=
	flock -x "$ROOT_GUARD"
	flock -u "$ROOT_USERS"
	exec {ROOT_USERS}>&-
	if flock -xn "$ANONYMIZE_CACHE/roots/.$(basename "$dir").users" true; then
		mountpoint -q "$dir/dev/pts" && umount "$dir/dev/pts"
		mountpoint -q "$dir/dev/shm" && umount "$dir/dev/shm"
		mountpoint -q "$dir/proc" && umount "$dir/proc"
	fi
	exec {ROOT_GUARD}>&-
}

# in_root DIR COMMAND...: run COMMAND as root inside the root, with a clean
# environment.
in_root() {
	local dir=$1
	shift
	chroot "$dir" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		LANG=C.UTF-8 HOME=/root DEBIAN_FRONTEND=noninteractive "$@"
}

# ensure_root VERSION: make the Debian root for PostgreSQL VERSION unless
# it is complete already (a lock keeps two runs from making it at once).
ensure_root() {
	local v=$1 dir lock
	dir=$(root_dir "$v") || return 1
	mkdir -p "$ANONYMIZE_CACHE/roots"
	[ -f "$dir/$ROOT_MARKER" ] && return 0
	exec {lock}>"$ANONYMIZE_CACHE/roots/.$(basename "$dir").make"
	flock -x "$lock"
	if [ ! -f "$dir/$ROOT_MARKER" ]; then
		(make_root "$v" "$dir") || { exec {lock}>&-; return 1; }
	fi
	exec {lock}>&-
}

# What the build and the suites need in the root for PostgreSQL $1: the
# server (with pageinspect and pgcrypto), its headers and PGXS (with
# pg_regress, pg_isolation_regress and the PostgreSQL::Test perl modules),
# libpq for the CLI, a compiler, IPC::Run and IO::Pty for the TAP tests.
root_package_list() {
	echo "postgresql-$1 postgresql-server-dev-$1 libpq-dev build-essential" \
		"libipc-run-perl libio-pty-perl"
}

# root_packages VERSION DIR: install what root_package_list names and the
# root lacks (nothing to do, and no network, once the root is complete).
root_packages() {
	local v=$1 dir=$2 missing=() p opts=()
	for p in $(root_package_list "$v"); do
		in_root "$dir" dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
			grep -q "install ok installed" || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	log "installing ${missing[*]} in $dir"
	# unstable's Release may be past its validity date
	[ "$(root_suite "$v")" = sid ] && opts=(-o Acquire::Check-Valid-Until=false)
	in_root "$dir" apt-get "${opts[@]}" update -qq || return 1
	in_root "$dir" apt-get "${opts[@]}" install -y -qq --no-install-recommends \
		"${missing[@]}" >"$dir.install.log" 2>&1 ||
		{ tail -30 "$dir.install.log"; return 1; }
	in_root "$dir" apt-get clean
}

# make_root VERSION DIR (in a subshell): debootstrap, then PostgreSQL
# VERSION with its server headers, the compiler and IPC::Run for the TAP
# tests; no cluster is created and no service started.
make_root() {
	local v=$1 dir=$2 suite mirror
	suite=$(root_suite "$v")
	mirror=$(debian_mirror)
	[ -n "$mirror" ] || { log "no Debian mirror found in /etc/apt/sources*"; return 1; }
	ensure_deps debootstrap || return 1
	trap root_umount EXIT
	log "making a Debian $suite root for PostgreSQL $v in $dir"
	if [ -d "$dir" ]; then
		umount "$dir/dev/pts" 2>/dev/null || true
		umount "$dir/dev/shm" 2>/dev/null || true
		umount "$dir/proc" 2>/dev/null || true
		rm -rf --one-file-system "$dir"
	fi
	debootstrap --variant=minbase "$suite" "$dir" "$mirror" >"$dir.debootstrap.log" 2>&1 ||
		{ tail -20 "$dir.debootstrap.log"; return 1; }
	# no service starts in the root, and postgresql-common makes no cluster
	printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
	chmod 755 "$dir/usr/sbin/policy-rc.d"
	mkdir -p "$dir/etc/postgresql-common"
	echo "create_main_cluster = false" >"$dir/etc/postgresql-common/createcluster.conf"
	root_mount "$dir" || return 1
	root_packages "$v" "$dir" || return 1
	root_umount
	touch "$dir/$ROOT_MARKER"
	log "Debian $suite root for PostgreSQL $v is ready"
}
