# The background worker and signals: SIGTERM stops it within a second,
# idle or in the middle of a run, and the postmaster starts it again
# (bgw_restart_time), when it resumes the unfinished run; kill -9 of the
# worker in the middle of a run makes the postmaster restart every backend,
# and the worker comes back and finishes the run; the worker exits with the
# postmaster.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $node = PostgreSQL::Test::Cluster->new('signals');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'anonymize'
anonymize.country_code = '47'
timezone = 'Europe/Oslo'
restart_after_crash = on
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION anonymize');
$node->reload;

sub status
{
	my ($col) = @_;
	return $node->safe_psql('postgres', "SELECT $col FROM anonymize.status()");
}

sub wait_status
{
	my ($cond, $what) = @_;
	$node->poll_query_until('postgres',
		"SELECT $cond FROM anonymize.status()")
	  or die "timed out waiting for $what";
}

# seconds until no process has this pid (the worker exited)
sub seconds_to_exit
{
	my ($pid) = @_;
	my $t0 = time();
	while (kill(0, $pid) && time() - $t0 < 10)
	{
		usleep(10_000);
	}
	return time() - $t0;
}

wait_status("worker_state = 'waiting'", 'the worker to wait');

# SIGTERM while idle
my $pid = status('worker_pid');
ok($pid > 0, 'status() gives the worker pid');
is( $node->safe_psql('postgres',
		"SELECT backend_type FROM pg_stat_activity WHERE pid = $pid"),
	'anonymize worker',
	'... the pid of the worker in pg_stat_activity');
my $log_offset = -s $node->logfile;
kill 'TERM', $pid;
my $secs = seconds_to_exit($pid);
cmp_ok($secs, '<', 1, 'SIGTERM stops the idle worker within a second');
ok( $node->log_contains(
		'terminating background worker "anonymize worker" due to administrator command',
		$log_offset),
	'... and the log says so');
wait_status("worker_state = 'waiting' AND worker_pid <> $pid",
	'the worker to come back');
pass('the postmaster starts the worker again');
is(status('last_trigger IS NULL'), 't', '... and it runs nothing when nothing was left');

# SIGTERM in the middle of a run: it stops, comes back and resumes the run
$pid = status('worker_pid');
$node->safe_psql('postgres', 'SELECT anonymize.wake()');
wait_status("worker_state = 'running'", 'the woken run');
$log_offset = -s $node->logfile;
kill 'TERM', $pid;
$secs = seconds_to_exit($pid);
cmp_ok($secs, '<', 1, 'SIGTERM stops the worker in the middle of a run within a second');
is( $node->safe_psql('postgres',
		'SELECT pending_trigger, pending_attempts FROM anonymize.worker_state'),
	'wake|1',
	'the unfinished run is recorded');
wait_status("last_outcome = 'ok' AND worker_pid <> $pid", 'the resumed run');
ok($node->log_contains('resuming an unfinished run \(wake\)', $log_offset),
	'the worker comes back and resumes the run');
is( $node->safe_psql('postgres',
		'SELECT pending_trigger IS NULL, pending_attempts FROM anonymize.worker_state'),
	't|0',
	'the resumed run is finished');

# kill -9 in the middle of a run: crash restart, then the run is resumed
$pid = status('worker_pid');
$node->safe_psql('postgres', 'SELECT anonymize.wake()');
wait_status("worker_state = 'running'", 'the woken run');
$log_offset = -s $node->logfile;
kill 'KILL', $pid;
$node->wait_for_log('all server processes terminated; reinitializing', $log_offset);
wait_status("last_outcome = 'ok' AND worker_pid <> $pid", 'the run after the crash');
ok($node->log_contains('resuming an unfinished run \(wake\)', $log_offset),
	'after kill -9 and the crash restart, the worker resumes the run');

# the worker exits with the postmaster (WL_EXIT_ON_PM_DEATH)
$pid = status('worker_pid');
kill 'KILL', $node->{_pid};
cmp_ok(seconds_to_exit($pid), '<', 2, 'the worker exits when the postmaster dies');
unlink($node->data_dir . '/postmaster.pid');
$node->_update_pid(0);

done_testing();
