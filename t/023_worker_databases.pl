# One worker per database: anonymize.database as a list serves each listed
# database with a worker of its own (wake() in one runs only that one); a
# listed database that does not exist is logged once, not at every look of
# the launcher, nor again after a reload that keeps the list; status() and
# pg_anonymize status name the database.  DROP DATABASE, ALTER DATABASE
# RENAME and CREATE DATABASE ... TEMPLATE of a served database succeed at
# once (the worker steps aside; when the statement fails it comes back).
# With "*": a database that gets the extension is served at once, one
# whose CREATE EXTENSION the launcher was not told of (a prepared
# transaction) at its wake() or within anonymize.rescan_interval, and DROP
# EXTENSION stops the worker.  A standby idles in every database and
# replays DROP DATABASE of a served one.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use File::Basename;
use File::Spec;
use IPC::Run;
use Time::HiRes qw(time usleep);

# the source tree (PGXS of 15 sets TESTDIR to it, 17 and later do not)
my $top = dirname(dirname(File::Spec->rel2abs(__FILE__)));
my $cli = -x "$top/cli/pg_anonymize" ? "$top/cli/pg_anonymize" : 'pg_anonymize';

my $node = PostgreSQL::Test::Cluster->new('databases');
$node->init(allows_streaming => 1);
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'anonymize'
anonymize.database = 'db_a, db_b, nosuch'
anonymize.country_code = '47'
anonymize.enabled = off
anonymize.rescan_interval = 2
max_prepared_transactions = 2
timezone = 'Europe/Oslo'
log_statement = none
});
$node->start;

# the pid of the worker serving $db, '' when none
sub worker_pid
{
	my ($db) = @_;
	return $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'anonymize worker' AND datname = '$db'");
}

sub wait_worker
{
	my ($db, $cond, $what) = @_;
	$node->poll_query_until('postgres',
		"SELECT $cond FROM (SELECT count(*) AS n, max(pid) AS pid FROM pg_stat_activity"
		  . " WHERE backend_type = 'anonymize worker' AND datname = '$db') w")
	  or die "timed out waiting for $what";
}

sub wait_status
{
	my ($db, $cond, $what) = @_;
	$node->poll_query_until($db, "SELECT $cond FROM anonymize.status()")
	  or die "timed out waiting for $what";
}

# an archive with one caller to erase, and the request for it
sub setup_archive
{
	my ($db) = @_;
	$node->safe_psql($db, q{
CREATE EXTENSION anonymize;
CREATE TABLE calls (id serial PRIMARY KEY, caller text, started_at timestamptz NOT NULL);
INSERT INTO calls (caller, started_at) VALUES
	('+47 987 65 432', '2024-03-01 12:00+01'), ('22222222', '2024-03-01 12:00+01');
SELECT anonymize.add_target('calls', 'caller', 'phone', 'archive', 'started_at');
INSERT INTO anonymize.anonymize_request (phone, to_date) VALUES ('98765432', '2024-06-30');
});
}

sub request_status
{
	my ($db) = @_;
	return $node->safe_psql($db, 'SELECT status FROM anonymize.anonymize_request WHERE id = 1');
}

sub missing_lines
{
	my ($name) = @_;
	my @hits = slurp_file($node->logfile) =~
	  /anonymize\.database names database "$name", which does not exist/g;
	return scalar @hits;
}

# --- a list of two databases (and one that does not exist) ---

$node->safe_psql('postgres', 'CREATE DATABASE db_a');
$node->safe_psql('postgres', 'CREATE DATABASE db_b');
setup_archive($_) for qw(db_a db_b);
wait_status('db_a', "worker_state = 'disabled'", 'the worker of db_a');
wait_status('db_b', "worker_state = 'disabled'", 'the worker of db_b');
is( $node->safe_psql('postgres', q{
		SELECT string_agg(coalesce(datname, '-') || ' ' || backend_type, ', ' ORDER BY datname NULLS FIRST)
		FROM pg_stat_activity WHERE backend_type LIKE 'anonymize %'}),
	'- anonymize launcher, db_a anonymize worker, db_b anonymize worker',
	'a list: the launcher, connected to no database, and one worker per database');
is($node->safe_psql('db_a', 'SELECT worker_database, database, worker_pid = ' . worker_pid('db_a')
			. ' FROM anonymize.status()'),
	'db_a|db_a, db_b, nosuch|t', 'status() names the database its worker serves');

# wake() runs the worker of its own database only
$node->safe_psql('db_a', 'SELECT anonymize.wake()');
wait_status('db_a', "last_trigger = 'wake()' AND last_outcome = 'ok'", 'the run in db_a');
is(request_status('db_a'), 'Done', 'wake() in db_a: its request is Done');
is($node->safe_psql('db_a', "SELECT caller FROM calls ORDER BY id"),
	"Anonymized\n22222222", '... with its row rewritten');
is(request_status('db_b'), 'Waiting', 'the request of db_b still Waits');
is($node->safe_psql('db_b', 'SELECT last_trigger IS NULL FROM anonymize.status()'),
	't', 'db_b\'s worker has not run');
$node->safe_psql('db_b', 'SELECT anonymize.wake()');
wait_status('db_b', "last_trigger = 'wake()' AND last_outcome = 'ok'", 'the run in db_b');
is(request_status('db_b'), 'Done', 'wake() in db_b: now its request is Done');

# wake() and status() where the list does not reach
$node->safe_psql('postgres', 'CREATE EXTENSION anonymize');
my ($ret, $out, $err) = $node->psql('postgres', "\\set VERBOSITY verbose\nSELECT anonymize.wake()");
like($err, qr/55000: no anonymize background worker serves this database/,
	'wake() in a database not served: 55000');
like($err, qr/DETAIL:  anonymize.database is "db_a, db_b, nosuch"/, '... naming the setting');
is($node->safe_psql('postgres', 'SELECT worker_state, worker_database IS NULL FROM anonymize.status()'),
	'not served|t', 'status() in a database not served');
$node->safe_psql('postgres', 'DROP EXTENSION anonymize');

# what anonymize.database accepts
($ret, $out, $err) = $node->psql('postgres', "ALTER SYSTEM SET anonymize.database = 'db_a, *'");
like($err, qr/invalid value for parameter "anonymize.database": "db_a, \*"\nDETAIL:  anonymize.database is a database name, a comma-separated list of names, or \* for every database/,
	'anonymize.database: "*" goes alone');
($ret, $out, $err) = $node->psql('postgres', "ALTER SYSTEM SET anonymize.database = 'db_a,,db_b'");
like($err, qr/invalid value for parameter "anonymize.database"/, '... and a list has no empty name');

# pg_anonymize status names the database
my ($cout, $cerr) = ('', '');
IPC::Run::run([ $cli, '-h', $node->host, '-p', $node->port, '-d', 'db_b', 'status' ],
	'<', \undef, '>', \$cout, '2>', \$cerr);
like($cout, qr/^worker +\| disabled \(pid \d+\), serving database db_b\n/,
	'pg_anonymize status: the worker and its database');

# the missing database: logged once, with a hint, over many looks of the
# launcher (every 2 s here) and a reload that keeps the list
$node->reload;
sleep(10);
is(missing_lines('nosuch'), 1, 'a missing database is logged once over five looks and a reload');
like(slurp_file($node->logfile),
	qr/names database "nosuch", which does not exist\n.*HINT:  Create the database/,
	'... with a hint');
$node->safe_psql('postgres', "ALTER SYSTEM SET anonymize.database = 'db_a,db_b,nosuch'");
$node->reload;
sleep(3);
is(missing_lines('nosuch'), 2, 'a reload that changes the list logs it once more');

# a database taken out of the list loses its worker, and gets it back
my $pid_b0 = worker_pid('db_b');
$node->safe_psql('postgres', "ALTER SYSTEM SET anonymize.database = 'db_a,nosuch'");
$node->reload;
wait_worker('db_b', 'n = 0', 'the worker of db_b to stop');
ok(!kill(0, $pid_b0), 'a reload without db_b in the list stops its worker');
$node->safe_psql('postgres', "ALTER SYSTEM SET anonymize.database = 'db_a,db_b,nosuch'");
$node->reload;
wait_worker('db_b', 'n = 1', 'the worker of db_b');
pass('... and a reload that names it again starts one');

# the launcher: SIGTERM stops it at once, the workers go on, and the
# postmaster starts it again
my $launcher = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'anonymize launcher'");
my $pid_a0 = worker_pid('db_a');
$pid_b0 = worker_pid('db_b');
my $t1 = time();
kill 'TERM', $launcher;
usleep(10_000) while kill(0, $launcher) && time() - $t1 < 10;
cmp_ok(time() - $t1, '<', 5, 'SIGTERM stops the launcher promptly (under 5 s)');
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'anonymize launcher' AND pid <> $launcher")
  or die 'no new launcher';
is(worker_pid('db_a') . ' ' . worker_pid('db_b'), "$pid_a0 $pid_b0",
	'the postmaster starts it again, and the workers were left running');

# --- statements that need the database to themselves ---

# DROP DATABASE fails while a session is connected: the worker comes back
my $pid_a = worker_pid('db_a');
my ($in, $sout, $serr) = ('', '', '');
my $session = IPC::Run::start(
	[ 'psql', '-X', '-h', $node->host, '-p', $node->port, '-d', 'db_a', '-c', 'SELECT pg_sleep(60)' ],
	'<', \$in, '>', \$sout, '2>', \$serr);
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE datname = 'db_a' AND query LIKE '%pg_sleep%'")
  or die 'no session';
($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE db_a');
like($err, qr/database "db_a" is being accessed by other users\nDETAIL:  There is 1 other session/,
	'DROP DATABASE with a session connected fails: the worker stepped aside, the session did not');
wait_worker('db_a', "n = 1 AND pid <> $pid_a", 'the worker of db_a to come back');
pass('after the failed DROP DATABASE the worker comes back');
$node->safe_psql('postgres',
	"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'db_a' AND query LIKE '%pg_sleep%'");
$session->finish;
$node->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM pg_stat_activity WHERE datname = 'db_a' AND query LIKE '%pg_sleep%'")
  or die 'the session stays';

# a role that may not drop the database does not get to stop its worker
$pid_a = worker_pid('db_a');
$node->safe_psql('postgres', 'CREATE ROLE intruder LOGIN');
($ret, $out, $err) = $node->psql('postgres', 'SET ROLE intruder; DROP DATABASE db_a');
like($err, qr/must be owner of database db_a/, 'DROP DATABASE by a role that does not own it is refused');
is(worker_pid('db_a'), $pid_a, '... and the worker stayed');

# CREATE DATABASE ... TEMPLATE and ALTER DATABASE ... RENAME of a served database
wait_status('db_a', "worker_state = 'disabled'", 'the worker of db_a');
my $t0 = time();
$node->safe_psql('postgres', 'CREATE DATABASE db_copy TEMPLATE db_a');
cmp_ok(time() - $t0, '<', 4.5, 'CREATE DATABASE ... TEMPLATE a served database succeeds at once');
$t0 = time();
$node->safe_psql('postgres', 'ALTER DATABASE db_a RENAME TO db_a2');
cmp_ok(time() - $t0, '<', 4.5, 'ALTER DATABASE ... RENAME of a served database succeeds at once');
is(worker_pid('db_a2'), '', 'a database renamed out of the list is not served');
$node->safe_psql('postgres', 'ALTER DATABASE db_a2 RENAME TO db_a');
wait_worker('db_a', 'n = 1', 'db_a served again');
pass('renamed back, it is served again');

# DROP DATABASE of a served database succeeds, and at once
wait_status('db_b', "worker_state = 'disabled'", 'the worker of db_b');
my $pid_b = worker_pid('db_b');
$pid_a = worker_pid('db_a');
my $secs = $node->safe_psql('postgres', q{
SELECT clock_timestamp() AS t0 \gset
DROP DATABASE db_b;
SELECT round(extract(epoch FROM clock_timestamp() - :'t0')::numeric, 3);
});
cmp_ok($secs, '<', 4.5, "DROP DATABASE of a served database succeeds before the server's own 5 s wait");
note("DROP DATABASE took $secs s");
ok(!kill(0, $pid_b), '... its worker is gone');
is(worker_pid('db_a'), $pid_a, '... and the other database\'s worker is untouched');
$node->safe_psql('postgres', 'DROP DATABASE db_copy');

# --- "*": every database where the extension is installed ---

$node->safe_psql('postgres', q{
ALTER SYSTEM SET anonymize.database = '*';
ALTER SYSTEM SET anonymize.rescan_interval = 60;
});
$node->reload;
$node->safe_psql('postgres', 'CREATE DATABASE db_c');
$t0 = time();
$node->safe_psql('db_c', 'CREATE EXTENSION anonymize');
wait_worker('db_c', 'n = 1', 'the worker of db_c');
$secs = time() - $t0;
cmp_ok($secs, '<', 5, '"*": a database that gets the extension is served at once');
note("served after $secs s");
is($node->safe_psql('db_c', 'SELECT worker_database FROM anonymize.status()'),
	'db_c', '... status() says so');
sleep(1);
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'anonymize worker' AND datname = 'postgres'"),
	'0', '"*": no worker stays in a database without the extension');
is(worker_pid('db_a') ne '', 1, '"*": db_a, which has it, keeps a worker');

# a CREATE EXTENSION the launcher is not told of (prepared transaction):
# served at wake()...
# the launcher's first look at db_w, which has no extension yet, over
# before the extension comes (its worker says so at DEBUG1)
$node->safe_psql('postgres', 'ALTER SYSTEM SET log_min_messages = debug1');
$node->reload;
my $log_at = -s $node->logfile;
$node->safe_psql('postgres', 'CREATE DATABASE db_w');
$node->wait_for_log(qr/anonymize worker: no extension in this database, leaving/, $log_at);
$node->safe_psql('postgres', 'ALTER SYSTEM RESET log_min_messages');
$node->reload;
$node->safe_psql('db_w', q{
BEGIN;
CREATE EXTENSION anonymize;
PREPARE TRANSACTION 'ext';
COMMIT PREPARED 'ext';
});
sleep(3);
is(worker_pid('db_w'), '', 'an extension the launcher is not told of: no worker before its look');
$t0 = time();
$node->safe_psql('db_w', 'SELECT anonymize.wake()');
wait_status('db_w', "last_trigger = 'wake()' AND last_outcome = 'ok'", 'the run in db_w');
$secs = time() - $t0;
cmp_ok($secs, '<', 5, '... wake() there starts a worker, which runs');
note("wake() to run done: $secs s");

# ... or at the launcher's next look, anonymize.rescan_interval later
$node->safe_psql('postgres', 'CREATE DATABASE db_r');
sleep(3);
$node->safe_psql('db_r', q{
BEGIN;
CREATE EXTENSION anonymize;
PREPARE TRANSACTION 'ext';
COMMIT PREPARED 'ext';
});
$node->safe_psql('postgres', 'ALTER SYSTEM SET anonymize.rescan_interval = 5');
$node->reload;
$t0 = time();
wait_worker('db_r', 'n = 1', 'the worker of db_r');
$secs = time() - $t0;
cmp_ok($secs, '<', 15, '... and without wake(), at the next look (rescan every 5 s)');
note("found after $secs s");

# DROP EXTENSION stops the worker of that database
$node->safe_psql('postgres', 'ALTER SYSTEM SET anonymize.rescan_interval = 60');
$node->reload;
my $pid_c = worker_pid('db_c');
$t0 = time();
$node->safe_psql('db_c', 'DROP EXTENSION anonymize');
wait_worker('db_c', 'n = 0', 'the worker of db_c to stop');
$secs = time() - $t0;
cmp_ok($secs, '<', 5, '"*": DROP EXTENSION stops that database\'s worker at once');
sleep(11);    # longer than the launcher's restart delay
is(worker_pid('db_c'), '', '... and none comes back');

# --- a standby idles in each database, and replays DROP DATABASE ---

$node->safe_psql('postgres', 'DROP DATABASE db_c');
$node->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('databases_standby');
$standby->init_from_backup($node, 'b', has_streaming => 1);
$standby->start;
for my $db (qw(db_a db_w db_r))
{
	$standby->poll_query_until($db, "SELECT worker_state = 'standby' FROM anonymize.status()")
	  or die "timed out waiting for the standby's worker of $db";
}
pass('the standby has an idle worker in each database with the extension');
$node->safe_psql('db_r', q{
INSERT INTO anonymize.anonymize_request (phone, to_date) VALUES ('98765432', '2024-06-30')});
$node->safe_psql('postgres', 'DROP DATABASE db_w');
$node->wait_for_catchup($standby);
my $stlog = -s $standby->logfile;
sleep(12);    # longer than the launcher's restart delay
is( $standby->safe_psql('postgres',
		"SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_stat_activity WHERE backend_type = 'anonymize worker'"),
	'db_a,db_r', 'the standby replayed DROP DATABASE of a served database; the others idle');
is($standby->safe_psql('db_r', 'SELECT status FROM anonymize.anonymize_request WHERE id = 1'),
	'Waiting', 'the standby runs nothing');
unlike(slurp_file($standby->logfile, $stlog), qr/FATAL|ERROR/, '... and its log stays quiet');

$standby->stop;

# the launcher exits with the postmaster
$launcher = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'anonymize launcher'");
kill 'KILL', $node->{_pid};
$t0 = time();
usleep(10_000) while kill(0, $launcher) && time() - $t0 < 30;
cmp_ok(time() - $t0, '<', 10, 'the launcher exits when the postmaster dies');
unlink($node->data_dir . '/postmaster.pid');
$node->_update_pid(0);
done_testing();
