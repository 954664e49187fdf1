# tools/citus.sh: Citus for the tests of anonymize on PostgreSQL 15, built
# once from the vendored source and kept in the cache.  Source it after
# tools/lib.sh; do not run it.
#
# Neither Debian nor the npm registry carries Citus, so the Citus tests
# (t/100_citus.pl) use a build of the archive in ../shared/vendor (next to
# the main checkout; ANONYMIZE_CITUS_SRC names another directory or the
# archive itself), with its patch for Debian's 15 headers.  The build
# (about 3.5 minutes on 2 cores) is installed with DESTDIR into
# $ANONYMIZE_CACHE/citus-pg15 and reused while its marker file exists; a
# lock keeps two runs from building at once.  citus_install copies it into
# the private PostgreSQL of a test run (tools/lib.sh, private_pg), the way
# build_install installs the extension there.  Where neither the archive
# nor an installed Citus is found, the Citus tests print "skipped: Citus
# not available".

CITUS_VERSION=13.2.2
CITUS_MARKER=.anonymize-citus-complete

# The Citus build for PostgreSQL 15 (a DESTDIR tree: usr/lib, usr/share).
citus_stage() { echo "$ANONYMIZE_CACHE/citus-pg15"; }

# The vendored archive: ANONYMIZE_CITUS_SRC (the archive or its directory),
# else ../shared/vendor next to this checkout or next to the main checkout
# of which this one is a git worktree.  Empty when none is found.
citus_archive() {
	local name="citus-$CITUS_VERSION.tar.gz" d common
	local dirs=()
	if [ -n "${ANONYMIZE_CITUS_SRC:-}" ]; then
		[ -f "$ANONYMIZE_CITUS_SRC" ] && { echo "$ANONYMIZE_CITUS_SRC"; return; }
		dirs+=("$ANONYMIZE_CITUS_SRC")
	fi
	dirs+=("$TOP/../shared/vendor")
	common=$(git -C "$TOP" rev-parse --path-format=absolute --git-common-dir 2>/dev/null || true)
	[ -n "$common" ] && dirs+=("$(dirname "$common")/../shared/vendor")
	for d in "${dirs[@]}"; do
		[ -f "$d/$name" ] && { (cd "$d" && echo "$PWD/$name"); return; }
	done
}

# ensure_citus: make the cached build unless it is complete; sets
# CITUS_STATE to cached, built, installed (Debian's own Citus is in the
# machine's PostgreSQL) or unavailable, and fails only when a build fails.
ensure_citus() {
	local stage archive lock
	stage=$(citus_stage)
	if [ -f "$stage/$CITUS_MARKER" ]; then
		CITUS_STATE=cached
		return 0
	fi
	archive=$(citus_archive)
	if [ -z "$archive" ]; then
		if [ -f "/usr/share/postgresql/15/extension/citus.control" ]; then
			CITUS_STATE=installed
		else
			CITUS_STATE=unavailable
			log "skipped: Citus not available (no citus-$CITUS_VERSION.tar.gz found; set ANONYMIZE_CITUS_SRC)"
		fi
		return 0
	fi
	mkdir -p "$ANONYMIZE_CACHE"
	exec {lock}>"$ANONYMIZE_CACHE/.citus-pg15.build"
	flock -x "$lock"
	if [ -f "$stage/$CITUS_MARKER" ]; then
		CITUS_STATE=cached
	else
		(citus_build "$archive" "$stage") || { exec {lock}>&-; return 1; }
		CITUS_STATE=built
	fi
	exec {lock}>&-
}

# citus_build ARCHIVE STAGE (in a subshell): unpack, patch, configure, make
# and install into STAGE, then write the marker.
citus_build() {
	local archive=$1 stage=$2 build patchfile
	ensure_deps liblz4-dev libzstd-dev libcurl4-openssl-dev libkrb5-dev libssl-dev \
		libselinux1-dev libxslt1-dev libpam0g-dev libreadline-dev || return 1
	build="$ANONYMIZE_CACHE/build/citus-pg15"
	patchfile="$(dirname "$archive")/citus-$CITUS_VERSION-pg15-headers.patch"
	log "building Citus $CITUS_VERSION for PostgreSQL 15 in $build (about 3.5 minutes)"
	rm -rf "$build" "$stage"
	mkdir -p "$build" || return 1
	tar -xzf "$archive" -C "$build" || return 1
	cd "$build/citus-$CITUS_VERSION" || return 1
	if [ -f "$patchfile" ]; then
		patch -s -p1 <"$patchfile" || return 1
	fi
	./configure -q PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config >"$build/configure.log" 2>&1 ||
		{ tail -30 "$build/configure.log"; return 1; }
	make -s -j"$(nproc)" >"$build/make.log" 2>&1 || { tail -40 "$build/make.log"; return 1; }
	make -s install DESTDIR="$stage" >>"$build/make.log" 2>&1 || { tail -20 "$build/make.log"; return 1; }
	touch "$stage/$CITUS_MARKER" || return 1
	rm -rf "$build"
	log "Citus $CITUS_VERSION is built in $stage"
}

# citus_install ROOT: copy the cached Citus build into the private
# PostgreSQL under ROOT (private_pg); nothing when there is none (the
# Citus tests then say that Citus is not available).
citus_install() {
	local root=$1 stage
	stage=$(citus_stage)
	[ -f "$stage/$CITUS_MARKER" ] || return 0
	cp -a "$stage/usr" "$root/"
	if [ "$(id -u)" = 0 ]; then chown -R postgres: "$root/usr"; fi
}
