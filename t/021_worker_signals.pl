# The background worker and signals, with real runs over a 300,000-row
# target: SIGTERM stops the worker within a second, idle or in the middle
# of a run, and the postmaster starts it again (bgw_restart_time), when it
# resumes the unfinished run; kill -9 of the worker in the middle of a run
# makes the postmaster restart every backend, and the worker comes back and
# finishes the run.  Either way the final rows and receipts are exact, and
# the server log never holds an identifier.  The worker exits with the
# postmaster.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use AnonymizeTest;
use Time::HiRes qw(time usleep);

my $node = new_node('signals', settings => q{
anonymize.enabled = on
anonymize.batch_size = 200
# a strong throttle keeps each run going for a few seconds, so that the
# test sees it in the middle however fast the machine (a run of 15,000
# rows takes 0.13 s without it); SIGTERM must cut its sleeps short too
anonymize.cost_delay = 20
anonymize.cost_limit = 200
restart_after_crash = on
# the test's own statements hold identifiers; the server's messages must not
log_statement = none
});

# whether the process with this pid still runs: a zombie has exited (once
# the postmaster is dead, the worker's exit is reaped by whatever process
# adopts it, as late as that one likes)
sub running
{
	my ($pid) = @_;
	return 0 unless kill(0, $pid);
	open(my $fh, '<', "/proc/$pid/stat") or return 1;
	my $stat = <$fh> // '';
	close $fh;
	return $stat !~ /^\d+ \(.*\) Z /;
}

# seconds until the process with this pid has exited (the worker)
sub seconds_to_exit
{
	my ($pid) = @_;
	my $t0 = time();
	while (running($pid) && time() - $t0 < 30)
	{
		usleep(10_000);
	}
	return time() - $t0;
}

# wait until the server accepts connections again after a crash restart
sub wait_ready
{
	my $t0 = time();
	while (time() - $t0 < 60)
	{
		my $ok = eval { $node->safe_psql('postgres', 'SELECT 1') eq '1' };
		return 1 if $ok;
		usleep(100_000);
	}
	return 0;
}

# wait until the run has committed some batches of request $id, but not all
sub wait_mid_run
{
	my ($id) = @_;
	my $t0 = time();
	while (time() - $t0 < 60)
	{
		my $r = $node->safe_psql('postgres',
			"SELECT (SELECT coalesce(sum(rows), 0) FROM anonymize.request_log WHERE request_id = $id AND event = 'rewrite') > 0"
			  . " AND (SELECT status FROM anonymize.anonymize_request WHERE id = $id) = 'Running'");
		return 1 if $r eq 't';
		usleep(20_000);
	}
	return 0;
}

# The archive: 300,000 calls, a third of them with the number 98765432 in
# several formats, a fifth with 004612345678, one in ten with the same
# digits in Sweden (+4698765432, never a match), spread over 2024.  Each
# row's original value follows from its id, so the final table is checked
# row by row.
$node->safe_psql('postgres', q{
CREATE EXTENSION anonymize;
CREATE TABLE calls (id int PRIMARY KEY, caller text, started_at timestamptz NOT NULL);
CREATE FUNCTION original(id int) RETURNS text IMMUTABLE LANGUAGE sql AS $$
	SELECT CASE id % 10
		WHEN 0 THEN '+4798765432' WHEN 1 THEN '0047 987 65 432' WHEN 2 THEN 'tel:98765432'
		WHEN 3 THEN '+46 12 345 678' WHEN 4 THEN '004612345678'
		WHEN 5 THEN '+4698765432'
		ELSE '+47' || (40000000 + id) END $$;
CREATE FUNCTION started(id int) RETURNS timestamptz IMMUTABLE LANGUAGE sql AS $$
	SELECT timestamptz '2024-01-01 12:00+01' + (id % 366) * interval '1 day' $$;
INSERT INTO calls SELECT i, original(i), started(i) FROM generate_series(1, 300000) i;
SELECT anonymize.add_target('calls', 'caller', 'phone', 'archive', 'started_at');
});
$node->reload;
wait_status($node, "worker_state = 'waiting'", 'the worker to wait');

# rows of calls that differ from what the requests so far must leave
sub wrong_rows
{
	my ($cond) = @_;
	return $node->safe_psql('postgres', qq{
SELECT count(*) FROM calls
WHERE caller IS DISTINCT FROM
	CASE WHEN $cond THEN 'Anonymized' ELSE original(id) END});
}

# SIGTERM while idle
my $pid = status($node, 'worker_pid');
is( $node->safe_psql('postgres',
		"SELECT backend_type FROM pg_stat_activity WHERE pid = $pid"),
	'anonymize worker',
	'status() gives the pid of the worker');
my $log_offset = -s $node->logfile;
kill 'TERM', $pid;
cmp_ok(seconds_to_exit($pid), '<', 5,
	'SIGTERM stops the idle worker promptly (under 5 s, where its wait is hours)');
ok( $node->log_contains(
		'terminating background worker "anonymize worker" due to administrator command',
		$log_offset),
	'... and the log says so');
wait_status($node, "worker_state = 'waiting' AND worker_pid <> $pid",
	'the worker to come back');
pass('the postmaster starts the worker again');
is(status($node, 'last_trigger IS NULL'), 't', '... and it runs nothing when nothing was left');

# request 1: SIGTERM in the middle of its run; the worker comes back and
# resumes the run
my $a_cond = "id % 10 IN (0, 1, 2) AND started(id) < timestamptz '2024-07-01 00:00+02'";
my $expect_a = $node->safe_psql('postgres', "SELECT count(*) FROM calls WHERE $a_cond");
$node->safe_psql('postgres', q{
INSERT INTO anonymize.anonymize_request (phone, to_date) VALUES ('98765432', '2024-06-30');
SELECT anonymize.wake();
});
$pid = status($node, 'worker_pid');
ok(wait_mid_run(1), 'the run of request 1 is under way');
like(status($node, 'activity'), qr/^anonymize run \d+: /, 'status() shows what the run does');
kill 'TERM', $pid;
my $secs = seconds_to_exit($pid);
cmp_ok($secs, '<', 5, 'SIGTERM stops the worker in the middle of a run promptly (under 5 s, where its wait is hours)');
note("stopped in $secs s");
is( $node->safe_psql('postgres',
		"SELECT status FROM anonymize.anonymize_request WHERE id = 1"),
	'Running', 'the request stays Running');
is( $node->safe_psql('postgres',
		'SELECT pending_trigger, pending_attempts FROM anonymize.worker_state'),
	'wake()|1',
	'the unfinished run is recorded');
$log_offset = -s $node->logfile;
wait_status($node, "last_outcome = 'ok' AND worker_pid <> $pid", 'the resumed run');
ok($node->log_contains('resuming an unfinished run \(wake\(\)\)', $log_offset),
	'the worker comes back and resumes the run');
is( $node->safe_psql('postgres',
		"SELECT status, rows_anonymized FROM anonymize.anonymize_request WHERE id = 1"),
	"Done|$expect_a", 'request 1 is Done with the rows rewritten');
is( $node->safe_psql('postgres',
		"SELECT sum(rows) FROM anonymize.request_log WHERE request_id = 1 AND event = 'rewrite'"),
	$expect_a, 'its receipts count each row once');

# request 2: kill -9 in the middle of its run; crash restart, then the
# worker resumes the run
my $b_cond = "(id % 10 IN (3, 4) AND started(id) < timestamptz '2024-04-01 00:00+02') OR ($a_cond)";
my $expect_b = $node->safe_psql('postgres',
	"SELECT count(*) FROM calls WHERE id % 10 IN (3, 4) AND started(id) < timestamptz '2024-04-01 00:00+02'");
$node->safe_psql('postgres', q{
INSERT INTO anonymize.anonymize_request (phone, to_date) VALUES ('004612345678', '2024-03-31');
SELECT anonymize.wake();
});
$pid = status($node, 'worker_pid');
ok(wait_mid_run(2), 'the run of request 2 is under way');
$log_offset = -s $node->logfile;
kill 'KILL', $pid;
$node->wait_for_log('all server processes terminated; reinitializing', $log_offset);
ok(wait_ready(), 'kill -9 of the worker: crash restart');
wait_status($node, "last_outcome = 'ok' AND last_requests_done = 1", 'the run after the crash');
ok($node->log_contains('resuming an unfinished run \(wake\(\)\)', $log_offset),
	'the worker comes back and resumes the run');
is( $node->safe_psql('postgres',
		"SELECT status, rows_anonymized FROM anonymize.anonymize_request WHERE id = 2"),
	"Done|$expect_b", 'request 2 is Done with the rows rewritten');
is( $node->safe_psql('postgres',
		"SELECT sum(rows) FROM anonymize.request_log WHERE request_id = 2 AND event = 'rewrite'"),
	$expect_b, 'its receipts count each row once');
is(wrong_rows($b_cond), 0, 'exactly the matching rows are rewritten, nothing else');
note("rows rewritten: request 1 $expect_a, request 2 $expect_b");

# no identifier in the server log, in any format
log_has_no($node, '98765432', '987 65 432', '12345678', '12 345 678');

# the worker exits with the postmaster (WL_EXIT_ON_PM_DEATH), once idle:
# the vacuum after its run (cost-delayed) does not look at the postmaster
ok($node->poll_query_until('postgres',
		'SELECT vacuumed_at IS NOT NULL FROM anonymize.runs ORDER BY id DESC LIMIT 1'),
	'the run after the crash has vacuumed');
$pid = status($node, 'worker_pid');
kill 'KILL', $node->{_pid};
cmp_ok(seconds_to_exit($pid), '<', 10, 'the worker exits when the postmaster dies (under 10 s, where its wait is hours)');
unlink($node->data_dir . '/postmaster.pid');
$node->_update_pid(0);

done_testing();
