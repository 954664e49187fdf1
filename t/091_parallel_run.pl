# The parallel run: the same archive in two databases, one run serially
# (anonymize.max_parallel_workers = 1), the other with three processes
# (forced on small tables by anonymize.parallel_min_table_size = 0, the
# rewrite shared by anonymize.parallel_rewrite_min_rows = 0; a
# large table by block ranges, the small partitions of a target a whole
# table a process): the
# same statuses, rows_anonymized, Held decisions, receipts and table
# contents, for run() and for the scheduled worker's run (wake()), with
# the ledger's late rows; the scan workers really ran, at the CPU priority
# of anonymize.run_nice; a scan worker
# terminated in the middle fails the run with no request Done, and the
# next run finishes exactly.  The rewrite is shared too: the workers
# rewrite batches, each counted once in its receipt; a rewrite worker
# terminated in the middle fails the run with receipts that count exactly
# the rows rewritten; a target failed by a batch fails its request as
# serially.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes;
use FindBin;
use lib $FindBin::RealBin;
use AnonymizeTest;

my $node = new_node('parallel_run', settings => q{
anonymize.parallel_min_table_size = 0
anonymize.parallel_rewrite_min_rows = 0
anonymize.max_rows_per_request = 3000
anonymize.batch_size = 700
log_min_messages = log
log_statement = none
});

my $archive = q{
CREATE EXTENSION anonymize;
CREATE TABLE calls (id int PRIMARY KEY, caller text, at timestamptz);
INSERT INTO calls
SELECT g, CASE WHEN g % 7 = 0 THEN '+47 912 34 567' WHEN g % 23 = 0 THEN '41234567'
               WHEN g % 13 = 0 THEN '+4798765432' WHEN g % 31 = 0 THEN '45 45 45 45'
               ELSE (90000000 + g)::text END,
       CASE WHEN g % 17 = 0 THEN NULL
            ELSE timestamptz '2024-01-01' + g * interval '10 minutes' END
FROM generate_series(1, 30000) g;
CREATE TABLE events (id int, contact text, at date) PARTITION BY RANGE (at);
CREATE TABLE events_q1 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2024-04-01');
CREATE TABLE events_q2 PARTITION OF events FOR VALUES FROM ('2024-04-01') TO ('2024-07-01');
CREATE TABLE events_h2 PARTITION OF events FOR VALUES FROM ('2024-07-01') TO ('2025-01-01');
CREATE TABLE events_other PARTITION OF events DEFAULT;
INSERT INTO events
SELECT g, CASE WHEN g % 5 = 0 THEN 'Bob.Test@MyTest.no' WHEN g % 9 = 0 THEN '912 34 567'
               WHEN g % 29 = 0 THEN 'eve@mytest.no' ELSE 'user' || g || '@example.org' END,
       CASE WHEN g % 97 = 0 THEN NULL ELSE date '2024-01-01' + (g % 300) END
FROM generate_series(1, 20000) g;
CREATE TABLE notes (id int, phone text, at timestamp);
CREATE TABLE notes_a () INHERITS (notes);
CREATE TABLE notes_b (extra int) INHERITS (notes);
INSERT INTO notes SELECT g, CASE WHEN g % 6 = 0 THEN '41234567' ELSE (40000000 + g)::text END,
       timestamp '2024-02-01' + g * interval '1 hour' FROM generate_series(1, 3000) g;
INSERT INTO notes_a SELECT g, CASE WHEN g % 8 = 0 THEN '41234567' ELSE (40000000 + g)::text END,
       timestamp '2024-01-01' + g * interval '30 minutes' FROM generate_series(1, 10000) g;
INSERT INTO notes_b SELECT g, CASE WHEN g % 10 = 0 THEN '+47 41 23 45 67' ELSE (40000000 + g)::text END,
       timestamp '2024-03-01' + g * interval '20 minutes', g FROM generate_series(1, 10000) g;
SELECT anonymize.add_target('calls', 'caller', 'phone', 'archive', 'at');
SELECT anonymize.add_target('events', 'contact', 'phone_or_email', 'archive', 'at');
SELECT anonymize.add_target('notes', 'phone', 'phone', 'sms_survey', 'at');
INSERT INTO anonymize.anonymize_request (phone, email, to_date) VALUES
	('91234567', 'bob.test@mytest.no', '2024-06-30'),
	('98765432', NULL, '2024-03-31'),
	(NULL, 'eve@mytest.no', '2024-12-31');
INSERT INTO anonymize.anonymize_request (phone, to_date, sms_survey) VALUES
	('41234567', '2024-05-31', true);
};
$node->safe_psql('postgres', 'CREATE DATABASE serial');
$node->safe_psql($_, $archive) for ('postgres', 'serial');

# the serial database's state and the parallel one's, compared
my %state = (
	requests => q{SELECT string_agg(format('%s %s %s %s', id, status, rows_anonymized, error), E'\n' ORDER BY id)
		FROM anonymize.anonymize_request},
	receipts => q{SELECT string_agg(format('%s %s %s %s %s %s %s', request_id, event, status, target, col, rows, detail),
		E'\n' ORDER BY request_id, event, status, target, col, rows, detail) FROM anonymize.request_log},
	calls => q{SELECT md5(string_agg(format('%s %s %s', id, caller, at), ',' ORDER BY id)) FROM calls},
	events => q{SELECT md5(string_agg(format('%s %s %s %s', tableoid::regclass, id, contact, at), ','
		ORDER BY tableoid::regclass::text, id)) FROM events},
	notes => q{SELECT md5(string_agg(format('%s %s %s %s', tableoid::regclass, id, phone, at), ','
		ORDER BY tableoid::regclass::text, id)) FROM notes});

sub compare
{
	my ($what) = @_;
	for my $k (sort keys %state)
	{
		is($node->safe_psql('postgres', $state{$k}),
			$node->safe_psql('serial', $state{$k}),
			"$what: the same $k as the serial run");
	}
}

sub set_conf
{
	my ($lines) = @_;
	$node->safe_psql('postgres', $_) for map { "ALTER SYSTEM SET $_" } split /;\s*/, $lines;
	$node->reload;
}

# the nice value of process pid (field 19 of /proc/pid/stat)
sub proc_nice
{
	my ($pid) = @_;
	my $stat = slurp_file("/proc/$pid/stat");
	$stat =~ s/^.*\) //s;
	return (split / /, $stat)[16];
}

# the throttle back to its defaults
sub reset_throttle
{
	$node->safe_psql('postgres', "ALTER SYSTEM RESET $_") for qw(anonymize.cost_limit anonymize.cost_delay);
	$node->reload;
}

# sql in both databases; run() in the serial one with one process, then
# in the other with three and the given throttle settings (or ''): the
# server log of each run
sub serial_then_parallel
{
	my ($sql, $throttle) = @_;
	$node->safe_psql($_, $sql) for ('postgres', 'serial');
	set_conf('anonymize.max_parallel_workers = 1');
	my $log = -s $node->logfile;
	run_when_slot('serial');
	wait_run_exit();
	my $serial_log = slurp_file($node->logfile, $log);
	set_conf("anonymize.max_parallel_workers = 3; $throttle");
	$log = -s $node->logfile;
	run_when_slot('postgres');
	wait_run_exit();
	reset_throttle();
	return ($serial_log, slurp_file($node->logfile, $log));
}

# terminate a worker of the scheduled run, a scan or rewrite worker (what)
# whose activity is like activity: the run fails for it, and its other
# workers exit
sub terminate_worker
{
	my ($what, $activity) = @_;
	is($node->safe_psql('postgres', qq{
		SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE backend_type = 'anonymize parallel $what' AND query LIKE '$activity'
		ORDER BY pid LIMIT 1}),
		't', "a $what worker terminated");
	wait_status($node, "last_trigger = 'wake()' AND last_outcome = 'failed'", 'the failed run');
	like($node->safe_psql('postgres', 'SELECT error FROM anonymize.run_log ORDER BY id DESC LIMIT 1'),
		qr/^a parallel $what worker of anonymize run \d+ stopped before the end of its $what$/,
		"the run failed for its $what worker");
	$node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'anonymize parallel $what'")
	  or die "the $what workers did not exit";
}

sub wait_run_exit
{
	$node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type IN ('anonymize run()', 'anonymize parallel scan', 'anonymize parallel rewrite')")
	  or die 'the run did not exit';
}

# run(): serially, then with three processes
set_conf('anonymize.max_parallel_workers = 1');
my $log = -s $node->logfile;
$node->safe_psql('serial', 'SELECT anonymize.run()');
wait_run_exit();
unlike(slurp_file($node->logfile, $log), qr/parallel scan of table/,
	'max_parallel_workers = 1: no parallel scan');
my $serial = $node->safe_psql('serial', $state{requests});
ok($serial =~ /^1 Held .*would rewrite/m && $serial =~ /^2 Done [1-9]\d* $/m && $serial =~ /^3 Done [1-9]\d* $/m,
	'the serial run: request 1 Held over the limit, 2 and 3 Done')
  or diag($serial);

set_conf('anonymize.max_parallel_workers = 3');
$log = -s $node->logfile;
$node->safe_psql('postgres', 'SELECT anonymize.run()');
wait_run_exit();
my $lines = slurp_file($node->logfile, $log);
like($lines, qr/parallel scan of table "calls" with 3 processes/, 'run(): calls scanned by three processes');
# events: its largest partition (events_h2, 39 % of the rows, more than a
# third) by block ranges, the three others a whole table a process; notes:
# both children (43 % each) by block ranges
like($lines, qr/parallel scan of table "events_h2" with 3 processes/, 'a partition larger than a process\'s share by block ranges');
like($lines, qr/parallel scan of 3 tables of target "public.events" with 3 processes, each table by one/,
	'the other partitions a whole table a process');
unlike($lines, qr/parallel scan of table "events_(q1|q2|other)"/, '... and not by block ranges');
like($lines, qr/parallel scan of table "notes_b" with 3 processes/, 'an inheritance child too');
compare('run()');

# whole partitions scanned by the workers: a request with a row in each
# of the three, its run throttled so that each table takes long enough for
# the workers to start and take some (the run, which starts first, took
# all three above; the parallel rewrite may have grown a partition past
# a process's share since, which is then scanned by block ranges)
my ($serial_log, $parallel_log) = serial_then_parallel(q{
INSERT INTO events VALUES (90001, 'Whole.Table@MyTest.no', '2024-02-01'),
	(90002, 'whole.table@mytest.no', '2024-05-01'), (90003, 'whole.table@mytest.no', NULL);
INSERT INTO anonymize.anonymize_request (email, to_date) VALUES ('whole.table@mytest.no', '2024-12-31');
}, 'anonymize.cost_limit = 1; anonymize.cost_delay = 5');
like($parallel_log,
	qr/parallel scan of [23] tables of target "public.events" done, [12] of them by its workers/,
	'the workers scanned whole partitions, and the run the rest');
is($node->safe_psql('postgres', q{
	SELECT status || ' ' || rows_anonymized FROM anonymize.anonymize_request ORDER BY id DESC LIMIT 1}),
	'Done 3', 'its three rows rewritten, whichever process scanned them');
compare('whole partitions scanned by the workers');

# the rewrite shared: 2,500 rows of a new request in calls, and among
# them 500 late rows of a Done request (in every batch, so that batches
# write its 'late' receipt at once), cut into five batches
# (anonymize.batch_size = 700), the run throttled so that the workers take
# some while the run notes them for the scrub
($serial_log, $parallel_log) = serial_then_parallel(q{
INSERT INTO calls SELECT 50000 + g, CASE WHEN g % 6 = 0 THEN '+47 98 76 54 32' ELSE '55 55 55 55' END,
	timestamptz '2024-03-01' + g * interval '1 minute' - CASE WHEN g % 6 = 0 THEN interval '30 days' ELSE interval '0' END
FROM generate_series(1, 3000) g;
INSERT INTO anonymize.anonymize_request (phone, to_date) VALUES ('55555555', '2024-12-31');
}, 'anonymize.cost_limit = 200; anonymize.cost_delay = 5');
unlike($serial_log, qr/parallel rewrite/, 'max_parallel_workers = 1: no parallel rewrite');
$lines = $parallel_log;
like($lines, qr/parallel rewrite of 3000 rows in 5 batches with 3 processes/,
	'3,000 rows rewritten in five batches by three processes');
like($lines, qr/parallel rewrite done, [1-5] of 5 batches by its workers/,
	'the workers rewrote some of the batches');
is($node->safe_psql('postgres', q{
	SELECT status || ' ' || rows_anonymized || ' ' || (SELECT sum(rows) FROM anonymize.request_log l
		WHERE l.request_id = r.id AND event = 'rewrite')
	FROM anonymize.anonymize_request r ORDER BY id DESC LIMIT 1}),
	'Done 2500 2500', 'every row rewritten once, and counted once in its receipt');
is($node->safe_psql('postgres', q{
	SELECT count(*) || ' ' || sum(rows) FROM anonymize.request_log
	WHERE event = 'late' AND (detail::jsonb ->> 'run')::bigint = (SELECT max(id) FROM anonymize.run_log)}),
	'1 500', 'the late rows of the Done request: one receipt of all 500');
# the pages that the workers' batches rewrote were noted and scrubbed too
$node->safe_psql('postgres', 'CREATE EXTENSION IF NOT EXISTS pageinspect');
pages_have_no($node, 'postgres', 'all', '55 55 55 55', '+47 98 76 54 32');
compare('the rewrite shared with the workers');

# 'late' receipts written by batches at once: a session's lock on
# request_log holds the batches back before their receipts, for 3 s after
# the first one waits (the others reach theirs meanwhile), then lets them
# go together: still one 'late' receipt of the run, as serially.  The lock
# is taken while a second session's lock on calls holds the run's scan, so
# it is in place before any batch (racing the rewrite to it failed in CI)
$node->safe_psql($_, q{
INSERT INTO calls SELECT 70000 + g, '+47 98 76 54 32', timestamptz '2024-02-01' + g * interval '1 minute'
FROM generate_series(1, 1500) g;
}) for ('postgres', 'serial');
set_conf('anonymize.max_parallel_workers = 1');
run_when_slot('serial');
wait_run_exit();
set_conf('anonymize.max_parallel_workers = 3');
my $scan_holder = $node->background_psql('postgres');
$scan_holder->query_safe('BEGIN');
$scan_holder->query_safe('LOCK TABLE calls IN ACCESS EXCLUSIVE MODE');
my $runner = $node->background_psql('postgres');
$runner->query_until(qr/started/, "\\echo started\nSELECT anonymize.run();\n");
$node->poll_query_until('postgres', q{
	SELECT count(*) > 0 FROM pg_locks l JOIN pg_stat_activity a USING (pid)
	WHERE a.backend_type = 'anonymize run()' AND NOT l.granted AND l.relation = 'calls'::regclass})
  or die 'the run never reached the scan of calls';
my $locker = $node->background_psql('postgres');
$locker->query_safe('BEGIN');
$locker->query_safe('LOCK TABLE anonymize.request_log IN SHARE MODE');
$scan_holder->query_safe('COMMIT');
$scan_holder->quit;
$node->poll_query_until('postgres', q{
	SELECT count(*) > 0 FROM pg_locks l JOIN pg_stat_activity a USING (pid)
	WHERE a.backend_type IN ('anonymize run()', 'anonymize parallel rewrite') AND NOT l.granted
	  AND l.relation = 'anonymize.request_log'::regclass})
  or die 'no batch waited for its receipts';
Time::HiRes::sleep(3);
$locker->query_safe('COMMIT');
$locker->quit;
$runner->quit;
wait_run_exit();
reset_throttle();
is($node->safe_psql('postgres', q{
	SELECT count(*) || ' ' || sum(rows) FROM anonymize.request_log
	WHERE event = 'late' AND (detail::jsonb ->> 'run')::bigint = (SELECT max(id) FROM anonymize.run_log)}),
	'1 1500', 'late rows of batches let go together: one receipt of all 1,500');
compare('late receipts of batches let go together');

# the held request confirmed, a late row of a Done request, a new request:
# the ledger's late rows travel from the workers to the run
my $more = q{
UPDATE anonymize.request_private SET confirmed_at = now() WHERE request_id = 1;
INSERT INTO calls VALUES (40001, '98765432', '2024-02-02'), (40002, '+47 45454545', '2024-02-03');
INSERT INTO events VALUES (40003, 'EVE@mytest.no', '2024-05-05');
INSERT INTO anonymize.anonymize_request (phone, to_date) VALUES ('45454545', '2024-12-31');
};
$node->safe_psql($_, $more) for ('postgres', 'serial');
set_conf('anonymize.max_parallel_workers = 1');
$node->safe_psql('serial', 'SELECT anonymize.run()');
wait_run_exit();
like($node->safe_psql('serial', q{SELECT string_agg(event, ',' ORDER BY event) FROM anonymize.request_log
	WHERE event = 'late' AND (detail::jsonb ->> 'run')::bigint = (SELECT max(id) FROM anonymize.run_log)}),
	qr/^late,late$/, 'the serial run erased two late rows');

# the scheduled worker's run (wake()), with three processes
set_conf('anonymize.max_parallel_workers = 3');
$log = -s $node->logfile;
$node->safe_psql('postgres', 'SELECT anonymize.wake()');
wait_status($node, "last_trigger = 'wake()' AND last_outcome = 'ok'", 'the woken run');
like(slurp_file($node->logfile, $log), qr/parallel scan of table "calls" with 3 processes/,
	'the scheduled run scans in parallel too');
compare('wake()');

# a scan worker terminated in the middle (the scan slowed down by the
# throttle): the run fails, no request is Done, the next run finishes it
$node->safe_psql($_, q{
INSERT INTO anonymize.anonymize_request (phone, to_date) VALUES ('90000001', '2024-12-31');
}) for ('postgres', 'serial');
set_conf('anonymize.max_parallel_workers = 1');
$node->safe_psql('serial', 'SELECT anonymize.run()');
wait_run_exit();

set_conf('anonymize.max_parallel_workers = 3; anonymize.cost_limit = 1; anonymize.cost_delay = 20; anonymize.run_nice = 15');
$log = -s $node->logfile;
$node->safe_psql('postgres', 'SELECT anonymize.wake()');
# a worker of the first, largest table (seconds at this throttle), not one
# that may be about to end
$node->poll_query_until('postgres', q{
	SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'anonymize parallel scan'
	AND EXISTS (SELECT FROM pg_stat_activity WHERE query LIKE 'anonymize run %: scanning public.calls %')})
  or die 'no scan worker seen';
# anonymize.run_nice: the run's process and its scan workers yield the
# cores (15: above the default 10 that the scheduling worker took in its
# earlier runs, as it cannot go back; a worker just started may not have
# begun its scan: look again a while)
my ($run_nice, @run_pids);
for (1 .. 100)
{
	@run_pids = split /\n/, $node->safe_psql('postgres', q{
		SELECT pid FROM pg_stat_activity
		WHERE backend_type = 'anonymize parallel scan' OR query LIKE 'anonymize run %: scanning %'});
	$run_nice = join(',', map { proc_nice($_) } @run_pids);
	last if @run_pids >= 2 && $run_nice eq join(',', (15) x @run_pids);
	Time::HiRes::sleep(0.1);
}
is($run_nice, join(',', (15) x @run_pids),
	'anonymize.run_nice = 15: the run and its ' . (@run_pids - 1) . ' scan workers at nice 15');
cmp_ok(scalar @run_pids, '>=', 2, 'the run and at least one scan worker seen');
# (a session still connected: a one-shot psql's backend may be gone, or
# going, when its /proc entry is read)
my $session = $node->background_psql('postgres');
is(proc_nice($session->query_safe('SELECT pg_backend_pid()')),
	proc_nice($node->safe_psql('postgres', "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'")),
	'a session keeps the priority of the server');
$session->quit;
terminate_worker('scan', '%');
is($node->safe_psql('postgres', q{
	SELECT status || ' ' || (SELECT count(*) FROM anonymize.request_log l WHERE l.request_id = r.id AND event = 'rewrite')
	FROM anonymize.anonymize_request r WHERE phone = '90000001'}),
	'Running 0', 'no request Done and no row rewritten on a partial scan');

$node->safe_psql('postgres', 'ALTER SYSTEM RESET anonymize.run_nice');
reset_throttle();
$node->safe_psql('postgres', 'SELECT anonymize.run()');
wait_run_exit();
compare('the run after the failed one');

# a rewrite worker terminated in the middle of its batches: the run
# fails, no request is Done, every row rewritten is in a receipt and no
# receipt counts a row not rewritten; the next run finishes exactly
my $many = q{
INSERT INTO calls SELECT 60000 + g, '56 56 56 56', timestamptz '2024-03-01' + g * interval '1 minute'
FROM generate_series(1, 2500) g;
INSERT INTO anonymize.anonymize_request (phone, to_date) VALUES ('56565656', '2024-12-31');
};
$node->safe_psql($_, $many) for ('postgres', 'serial');
set_conf('anonymize.max_parallel_workers = 1');
$node->safe_psql('serial', 'SELECT anonymize.run()');
wait_run_exit();
# (throttled to a second or more a batch: a worker seen rewriting must
# still be there when it is terminated, on a loaded machine too)
set_conf('anonymize.max_parallel_workers = 3; anonymize.cost_limit = 20; anonymize.cost_delay = 10');
$node->safe_psql('postgres', 'SELECT anonymize.wake()');
$node->poll_query_until('postgres', q{
	SELECT count(*) > 0 FROM pg_stat_activity
	WHERE backend_type = 'anonymize parallel rewrite' AND query LIKE 'anonymize run %: rewriting public.calls%'})
  or die 'no rewrite worker seen';
terminate_worker('rewrite', 'anonymize run %: rewriting%');
is($node->safe_psql('postgres', q{
	SELECT status || ' ' || ((SELECT coalesce(sum(rows), 0) FROM anonymize.request_log l
		WHERE l.request_id = r.id AND event = 'rewrite')
		= 2500 - (SELECT count(*) FROM calls WHERE caller = '56 56 56 56'))
	FROM anonymize.anonymize_request r WHERE phone = '56565656'}),
	'Running true', 'not Done, and its receipt counts exactly the rows rewritten');
diag('rows rewritten before the run failed: ' . $node->safe_psql('postgres',
	q{SELECT 2500 - count(*) FROM calls WHERE caller = '56 56 56 56'}));
reset_throttle();
$node->safe_psql('postgres', 'SELECT anonymize.run()');
wait_run_exit();
compare('the run after the failed rewrite');
pages_have_no($node, 'postgres', 'all', '56 56 56 56');

# no background worker slot free (logical replication's launcher, ours,
# the database's worker and run()'s take the four): the run scans alone,
# says so, and is the same
$node->append_conf('postgresql.conf', 'max_worker_processes = 4');
$node->restart;

# run() in db once its own worker gets a slot: just after the restart the
# launcher's first look may still hold one for a moment
sub run_when_slot
{
	my ($db) = @_;
	for (1 .. 60)
	{
		my ($ret, $out, $err) = $node->psql($db, 'SELECT anonymize.run()');
		return if $ret == 0;
		die "run() in $db failed: $err"
		  unless $err =~ /Every background worker slot is in use/;
		Time::HiRes::usleep(500_000);
	}
	die "run() in $db found no background worker slot for 30 s";
}
(undef, $lines) = serial_then_parallel(q{
INSERT INTO anonymize.anonymize_request (phone, to_date) VALUES ('90000002', '2024-12-31');
}, '');
like($lines, qr/no background worker slot free for a parallel scan of table "calls", scanning it serially/,
	'no slot free: the run says it scans alone');
unlike($lines, qr/parallel scan of table "calls" with/, 'and does');
compare('no slot free');

# a target failed by a batch (a constraint added after its registration
# refuses the replacement in one row of the first batch): the request
# Failed with the serial run's error, its receipt counting exactly the
# rows that the batches of other processes rewrote
my $pairs = q{
CREATE TABLE pairs (id int, num text, note text, at date);
INSERT INTO pairs SELECT g, '57575757', CASE WHEN g = 100 THEN 'kept' END, '2024-01-01'
FROM generate_series(1, 2000) g;
SELECT anonymize.add_target('pairs', 'num', 'phone', 'archive', 'at');
ALTER TABLE pairs ADD CONSTRAINT pairs_note CHECK (num <> 'Anonymized' OR note IS NULL);
INSERT INTO anonymize.anonymize_request (phone, to_date) VALUES ('57575757', '2024-12-31');
};
$node->append_conf('postgresql.conf', 'max_worker_processes = 8');
$node->restart;
(undef, $lines) = serial_then_parallel($pairs, '');
my $failed = q{SELECT status || ' ' || error FROM anonymize.anonymize_request ORDER BY id DESC LIMIT 1};
like($node->safe_psql('serial', $failed), qr/^Failed target public.pairs \(column num\) cannot be rewritten: new row for relation "pairs" violates check constraint "pairs_note"$/,
	'serially: the request Failed for its target');
is($node->safe_psql('postgres', $failed), $node->safe_psql('serial', $failed),
	'in parallel: the same status and error');
is($node->safe_psql('postgres', q{
	SELECT (SELECT coalesce(sum(rows), 0) FROM anonymize.request_log l
		WHERE l.request_id = r.id AND event = 'rewrite')
		= (SELECT count(*) FROM pairs WHERE num = 'Anonymized')
	FROM anonymize.anonymize_request r ORDER BY id DESC LIMIT 1}),
	't', 'its receipt counts exactly the rows rewritten');
diag('rows of the failed target rewritten: ' . $node->safe_psql('postgres',
	q{SELECT count(*) FROM pairs WHERE num = 'Anonymized'}));
like($lines, qr/parallel rewrite of 2000 rows in 3 batches with 3 processes/,
	'the failing target rewritten in parallel');

# the run's VACUUM throttled and at the run's priority in every process
# of it: a table with several indexes, vacuumed with its index pass by the
# scheduled run (run()'s own worker belongs to its caller's lock group and
# vacuums alone), so that PostgreSQL's parallel workers take indexes of
# it.  They sleep for the throttle (wait event VacuumDelay) and run at
# anonymize.run_nice, as the run's process does.  (The throttle once went
# to VACUUM by assigning the variables of vacuum_cost_delay and _limit,
# which the workers do not get: they restore the settings, and those were
# at their defaults; they vacuumed at full speed and nice 0.)
$node->safe_psql('postgres', q{
CREATE TABLE nice_calls (id int PRIMARY KEY, caller text, at date);
CREATE INDEX nice_calls_caller ON nice_calls (caller);
CREATE INDEX nice_calls_at ON nice_calls (at, caller);
INSERT INTO nice_calls SELECT g, CASE WHEN g % 10 = 0 THEN '58585858' ELSE (40000000 + g)::text END,
	'2024-01-01' FROM generate_series(1, 20000) g;
SELECT anonymize.add_target('nice_calls', 'caller', 'phone', 'archive', 'at');
INSERT INTO anonymize.anonymize_request (phone, to_date) VALUES ('58585858', '2024-12-31');
});
set_conf('anonymize.run_nice = 17; min_parallel_index_scan_size = 0; max_parallel_maintenance_workers = 2; '
	. 'anonymize.cost_limit = 25; anonymize.cost_delay = 10');
my $before = $node->safe_psql('postgres', 'SELECT max(id) FROM anonymize.run_log');
my $sampler = $node->background_psql('postgres');
$node->safe_psql('postgres', 'SELECT anonymize.wake()');
my (%vacuum_nice, $run_slept, $worker_slept);
my $deadline = time() + 180;
while (time() < $deadline)
{
	# the run's process in its vacuum, and PostgreSQL's workers it leads
	my $rows = $sampler->query_safe(q{
		WITH run AS (SELECT pid FROM pg_stat_activity
			WHERE backend_type = 'anonymize worker' AND query LIKE 'anonymize run %: vacuuming%')
		SELECT CASE WHEN backend_type = 'parallel worker' THEN 'worker' ELSE 'run' END,
			pid, coalesce(wait_event, '-')
		FROM pg_stat_activity
		WHERE pid IN (SELECT pid FROM run)
		   OR (backend_type = 'parallel worker' AND leader_pid IN (SELECT pid FROM run))});
	for my $row (split /\n/, $rows)
	{
		my ($who, $pid, $wait) = split /\|/, $row;
		if ($who eq 'worker' && $wait eq 'VacuumDelay')
		{
			# (asleep in its index pass: a worker seen just started may
			# not have restored its leader's settings yet)
			my $nice = eval { proc_nice($pid) };
			$vacuum_nice{$pid} = $nice if defined $nice;
			$worker_slept = 1;
		}
		elsif ($who eq 'run')
		{
			$run_slept = 1 if $wait eq 'VacuumDelay';
		}
	}
	last if $sampler->query_safe(qq{SELECT count(*) FROM anonymize.run_log
		WHERE id > $before AND vacuumed_at IS NOT NULL}) eq '1';
	Time::HiRes::usleep(10_000);
}
$sampler->quit;
ok($run_slept, "the run's process slept for the throttle in its VACUUM");
ok($worker_slept, "and so did PostgreSQL's parallel workers of its index pass");
cmp_ok(scalar(keys %vacuum_nice), '>=', 1, 'their priority read');
is(join(',', sort values %vacuum_nice), join(',', (17) x scalar(keys %vacuum_nice)),
	'they ran at anonymize.run_nice = 17, as the run does');
is($node->safe_psql('postgres', q{
	SELECT status || ' ' || rows_anonymized FROM anonymize.anonymize_request ORDER BY id DESC LIMIT 1}),
	'Done 2000', 'the request of that run Done');
$node->safe_psql('postgres', "ALTER SYSTEM RESET $_")
  for qw(anonymize.run_nice min_parallel_index_scan_size max_parallel_maintenance_workers);
reset_throttle();

log_has_no($node, '91234567', '98765432', '41234567', 'bob.test@mytest.no', 'eve@mytest.no');

done_testing();
