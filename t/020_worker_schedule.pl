# The background worker's schedule: it waits for anonymize.run_at in
# anonymize.timezone, a reload (SIGHUP) reschedules, the run fires at
# run_at, a restart catches up a missed scheduled run (and only a missed
# one), anonymize.enabled = off stops scheduled runs but not wake(), and
# wake() explains itself where it cannot work (another database, no
# shared_preload_libraries).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use AnonymizeTest;

my $tz = 'Europe/Oslo';
my $node = new_node('schedule', settings => qq{
anonymize.enabled = on
anonymize.timezone = '$tz'
timezone = 'UTC'
});

# "HH:MM" of now + $minutes in the anonymize time zone
sub local_minute
{
	my ($minutes) = @_;
	return $node->safe_psql('postgres',
		"SELECT to_char((now() + interval '$minutes min') AT TIME ZONE '$tz', 'HH24:MI')");
}

# the instant of the next (or latest, $dir = '<=') HH:MM in the time zone
sub slot_sql
{
	my ($hhmm, $dir) = @_;
	my $today = "(date_trunc('day', now() AT TIME ZONE '$tz') + time '$hhmm')";
	return $dir eq '>'
	  ? "(CASE WHEN $today AT TIME ZONE '$tz' > now() THEN $today ELSE $today + interval '1 day' END) AT TIME ZONE '$tz'"
	  : "(CASE WHEN $today AT TIME ZONE '$tz' <= now() THEN $today ELSE $today - interval '1 day' END) AT TIME ZONE '$tz'";
}

# not in the last seconds of a minute, so that "the next minute" stays ahead
sub avoid_minute_end
{
	my $s = $node->safe_psql('postgres', "SELECT extract(second FROM now())::int");
	sleep(62 - $s) if $s >= 54;
}

$node->poll_query_until('postgres',
	"SELECT query FROM pg_stat_activity WHERE backend_type = 'anonymize worker'",
	'waiting for CREATE EXTENSION anonymize')
  or die 'no idle worker';
pass('before CREATE EXTENSION the worker idles');
$node->safe_psql('postgres', 'CREATE EXTENSION anonymize');
$node->reload;    # the worker looks again at once on SIGHUP
wait_status($node, "worker_state = 'waiting'", 'the worker to wait');

# one run per local date across daylight-saving changes (Europe/Oslo 2026:
# 29 March 02:00 -> 03:00, 25 October 03:00 -> 02:00); times in UTC
is( $node->safe_psql('postgres', q{
SELECT string_agg(a || ' -> ' || anonymize._schedule_next(a, r, 'Europe/Oslo'), E'\n' ORDER BY a, r)
FROM (VALUES ('2026-06-01 00:00+00'::timestamptz, '02:00'::time),
	('2026-06-01 00:00:01+00', '02:00'),
	('2026-03-28 12:00+00', '02:30'),
	('2026-03-29 01:30+00', '02:30'),
	('2026-10-24 12:00+00', '02:30'),
	('2026-10-25 00:30+00', '02:30'),
	('2026-10-25 01:30+00', '02:30'),
	('2026-12-31 23:30+00', '00:15')) AS v(a, r)}),
	q{2026-03-28 12:00:00+00 -> 2026-03-29 01:30:00+00
2026-03-29 01:30:00+00 -> 2026-03-30 00:30:00+00
2026-06-01 00:00:00+00 -> 2026-06-02 00:00:00+00
2026-06-01 00:00:01+00 -> 2026-06-02 00:00:00+00
2026-10-24 12:00:00+00 -> 2026-10-25 01:30:00+00
2026-10-25 00:30:00+00 -> 2026-10-25 01:30:00+00
2026-10-25 01:30:00+00 -> 2026-10-26 01:30:00+00
2026-12-31 23:30:00+00 -> 2027-01-01 23:15:00+00},
	'the schedule: strictly after, a skipped run_at an hour later, a repeated one once, across the year');

is(status($node, 'next_run = ' . slot_sql('02:00', '>')),
	't', 'next_run is the next 02:00 in anonymize.timezone');
is(status($node, 'last_trigger IS NULL'), 't', 'installing the extension runs nothing');
is( $node->safe_psql('postgres',
		'SELECT last_slot = ' . slot_sql('02:00', '<=') . ' FROM anonymize.worker_state'),
	't',
	'the first start records the latest 02:00 as not missed');
like(
	$node->safe_psql('postgres',
		"SELECT state || ': ' || query FROM pg_stat_activity WHERE backend_type = 'anonymize worker'"),
	qr/^idle: waiting until \d{4}-\d\d-\d\d 02:00 Europe\/Oslo$/,
	'pg_stat_activity shows what the worker waits for');

# SIGHUP: a new run_at reschedules
avoid_minute_end();
my $later = local_minute(3);
$node->safe_psql('postgres', "ALTER SYSTEM SET anonymize.run_at = '$later'");
$node->reload;
wait_status($node, 'next_run = ' . slot_sql($later, '>'), 'the new run_at after a reload');
pass('a reload moves next_run to the new run_at');
is(status($node, 'last_trigger IS NULL'), 't', 'a new run_at does not run at once');

# a restart catches up the latest scheduled run when it was missed
SKIP:
{
	my $now = local_minute(0);
	skip 'run_at 02:00 is the current minute', 3 if $now eq '02:00';
	$node->safe_psql('postgres', "ALTER SYSTEM SET anonymize.run_at = '$now'");
	$node->stop;
	my $log_offset = -s $node->logfile;
	$node->start;
	wait_status($node, "last_trigger = 'schedule' AND last_outcome = 'ok'",
		'the catch-up run');
	ok($node->log_contains('catching up a missed scheduled run', $log_offset),
		'the restarted worker catches up the missed run at once');
	is( $node->safe_psql('postgres',
			'SELECT last_slot = ' . slot_sql($now, '<=') . ' FROM anonymize.worker_state'),
		't',
		'the caught-up run is recorded');
	wait_status($node, "worker_state = 'waiting'", 'the worker to wait again');
	is(status($node, 'next_run = ' . slot_sql($now, '>')),
		't', 'after catching up, the next run is tomorrow');
}

# the scheduled run fires at run_at
avoid_minute_end();
my $next = local_minute(1);
my $slot = $node->safe_psql('postgres', 'SELECT ' . slot_sql($next, '>'));
$node->safe_psql('postgres', "ALTER SYSTEM SET anonymize.run_at = '$next'");
$node->reload;
wait_status($node, "next_run = '$slot'", 'next_run at the next minute');
wait_status($node, "last_trigger = 'schedule' AND last_started >= '$slot' AND last_outcome = 'ok'",
	'the scheduled run');
is( $node->safe_psql('postgres',
		"SELECT last_started - '$slot' < interval '5 s' FROM anonymize.status()"),
	't',
	'the scheduled run fires at run_at');
wait_status($node, "worker_state = 'waiting'", 'the worker to wait again');
is(status($node, "next_run = '$slot'::timestamptz + interval '1 day'"),
	't', 'the next run is a day later');

# nothing was missed: a restart runs nothing
my $started = status($node, 'last_started');
$node->restart;
wait_status($node, "worker_state = 'waiting'", 'the worker after a restart');
is(status($node, 'last_started'), $started, 'a restart with nothing missed runs nothing');

# anonymize.enabled = off: no scheduled runs, wake() still runs
$node->safe_psql('postgres', 'ALTER SYSTEM SET anonymize.enabled = off');
$node->reload;
wait_status($node, "worker_state = 'disabled'", 'the disabled worker');
is(status($node, 'next_run IS NULL AND NOT enabled'), 't', 'disabled: no next run');
$node->safe_psql('postgres', 'SELECT anonymize.wake()');
wait_status($node, "last_trigger = 'wake()' AND last_outcome = 'ok'", 'the woken run');
pass('wake() runs while anonymize.enabled is off');

# privileges: nothing for PUBLIC; a role granted wake() and status() needs
# nothing else (status() reads worker_state as its owner)
$node->safe_psql('postgres', q{
CREATE ROLE portal LOGIN;
CREATE ROLE nobody LOGIN;
GRANT USAGE ON SCHEMA anonymize TO portal, nobody;
GRANT EXECUTE ON FUNCTION anonymize.wake(), anonymize.status() TO portal;
});
is( $node->safe_psql('postgres',
		"SET ROLE portal; SELECT FROM anonymize.wake(); SELECT worker_state IS NOT NULL AND last_started IS NOT NULL FROM anonymize.status()"),
	't', 'a role granted wake() and status() can use them');
my ($ret, $out, $err) = $node->psql('postgres',
	"SET ROLE nobody; SELECT anonymize.status()");
like($err, qr/permission denied for function status/, 'status() is not granted to PUBLIC');
($ret, $out, $err) = $node->psql('postgres', "SET ROLE nobody; SELECT anonymize.wake()");
like($err, qr/permission denied for function wake/, 'nor is wake()');

# wake() in a database the worker does not serve
$node->safe_psql('postgres', 'CREATE DATABASE other');
$node->safe_psql('other', 'CREATE EXTENSION anonymize');
($ret, $out, $err) = $node->psql('other',
	"\\set VERBOSITY verbose\nSELECT anonymize.wake()");
like($err, qr/55000: the anonymize background worker serves database "postgres", not this one/,
	'wake() in another database: 55000');
like($err, qr/HINT:  Call anonymize.wake\(\) in database "postgres"/, '... with a hint');

# without shared_preload_libraries
$node->adjust_conf('postgresql.conf', 'shared_preload_libraries', "''");
$node->restart;
($ret, $out, $err) = $node->psql('postgres',
	"\\set VERBOSITY verbose\nSELECT anonymize.wake()");
like($err, qr/55000: the anonymize background worker is not loaded/,
	'wake() without the worker loaded: 55000');
like($err, qr/HINT:  Add anonymize to shared_preload_libraries/, '... with a hint');
is( $node->safe_psql('postgres',
		'SELECT worker_state, worker_pid IS NULL, next_run IS NULL, last_trigger, last_outcome FROM anonymize.status()'),
	'not loaded|t|t|wake()|ok',
	'status() without the worker: not loaded, and the last run from worker_state');

$node->stop;
done_testing();
