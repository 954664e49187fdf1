# A hot standby follows the primary and its worker stays quiet: it idles
# in state "standby", runs nothing (a scheduled run that comes due is not
# run, it writes nothing), and wake() on the standby is an error; the
# primary's woken run reaches the standby by replication.  Promoted, the
# standby's worker takes over the schedule.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use AnonymizeTest;

my $primary = new_node('primary', allows_streaming => 1, settings => q{
anonymize.enabled = on
log_statement = none
});
$primary->safe_psql('postgres', q{
CREATE EXTENSION anonymize;
CREATE TABLE calls (id int PRIMARY KEY, caller text, started_at timestamptz NOT NULL);
INSERT INTO calls VALUES (1, '+4798765432', '2024-01-10 10:00+01'),
	(2, '+4791234567', '2024-01-10 10:00+01');
SELECT anonymize.add_target('calls', 'caller', 'phone', 'archive', 'started_at');
});
$primary->reload;
wait_status($primary, "worker_state = 'waiting'", 'the primary worker to wait');

$primary->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'b', has_streaming => 1);
$standby->start;

wait_status($standby, "worker_state = 'standby'", 'the standby worker to idle');
is( $standby->safe_psql('postgres',
		"SELECT state, query FROM pg_stat_activity WHERE backend_type = 'anonymize worker'"),
	'idle|hot standby: runs nothing until promoted',
	'the standby worker idles and pg_stat_activity says why');
is(status($standby, 'next_run IS NULL'), 't', 'the standby schedules nothing');

my ($ret, $out, $err) = $standby->psql('postgres',
	"\\set VERBOSITY verbose\nSELECT anonymize.wake()");
like($err, qr/25006: cannot wake the anonymize worker on a hot standby/,
	'wake() on the standby: 25006');

# a request woken on the primary is processed there and replicated
$primary->safe_psql('postgres', q{
INSERT INTO anonymize.anonymize_request (phone, to_date) VALUES ('98765432', '2024-06-30');
SELECT anonymize.wake();
});
$primary->poll_query_until('postgres',
	"SELECT status = 'Done' FROM anonymize.anonymize_request WHERE id = 1")
  or die 'request not done on the primary';
$primary->wait_for_catchup($standby);
is( $standby->safe_psql('postgres', 'SELECT id, caller FROM calls ORDER BY id'),
	"1|Anonymized\n2|+4791234567",
	'the standby follows the primary\'s run');

# a scheduled time that comes due runs nothing on the standby (run_at is
# the current minute: past, so due at once after a restart if it were a
# primary)
my $now = $standby->safe_psql('postgres',
	"SELECT to_char(now() AT TIME ZONE 'Europe/Oslo', 'HH24:MI')");
$standby->append_conf('postgresql.conf', "anonymize.run_at = '$now'");
$standby->restart;
wait_status($standby, "worker_state = 'standby'", 'the standby worker to idle after a restart');
sleep(1);
is(status($standby, 'worker_state, last_trigger'),
	'standby|wake()',
	'the standby worker stays idle: its last run is the primary\'s, replicated');
ok(!$standby->log_contains('anonymize run \d+ started'),
	'no run ever started on the standby');
ok(!$standby->log_contains('anonymize worker: (resuming|catching up)'),
	'the standby worker never tries to catch up');

# promoted, the worker takes over: the missed run_at is caught up (unless
# the current minute is the default 02:00, already recorded as handled)
$primary->stop;
$standby->promote;
SKIP:
{
	skip 'run_at is the default 02:00', 1 if $now eq '02:00';
	wait_status($standby, "last_trigger = 'schedule' AND last_outcome = 'ok'",
		'a run after promotion');
	pass('after promotion the worker catches up the missed scheduled run');
}

log_has_no($primary, '98765432');
log_has_no($standby, '98765432');

$standby->stop;
done_testing();
