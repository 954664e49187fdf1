# is_anonymized() and the protect() guard on a hot standby: the cache is
# built from the replicated page without writing anything, and a request
# filed on the primary counts on the standby at the next statement once
# replayed, also in a session that was already open.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use AnonymizeTest;

my $primary = new_node('primary', allows_streaming => 1, settings => q{
anonymize.timezone = 'Europe/Oslo'
});
$primary->safe_psql('postgres', q{
CREATE EXTENSION anonymize;
CREATE ROLE portal LOGIN;
GRANT USAGE ON SCHEMA anonymize TO portal;
GRANT EXECUTE ON FUNCTION anonymize.is_anonymized(text) TO portal;
CREATE SCHEMA archive;
GRANT USAGE ON SCHEMA archive TO portal;
CREATE TABLE archive.calls (id int PRIMARY KEY, caller text, started_at timestamptz NOT NULL);
INSERT INTO archive.calls VALUES (1, '+4795000001', '2024-01-01 12:00+01'),
                                 (2, '+4795000002', '2024-01-01 12:00+01');
GRANT SELECT ON archive.calls TO portal;
SELECT anonymize.add_target('archive.calls', 'caller', 'phone', 'archive', 'started_at');
SELECT anonymize.protect('archive.calls');
INSERT INTO anonymize.anonymize_request (phone, to_date) VALUES ('95000001', '2024-02-01');
});

$primary->backup('backup');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'backup', has_streaming => 1);
$standby->start;
$primary->wait_for_catchup($standby, 'replay', $primary->lsn('insert'));

is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'), 't', 'standby is in recovery');
is($standby->safe_psql('postgres',
		q{SELECT anonymize.is_anonymized('+47 950 00 001')}, extra_params => ['-U', 'portal']),
	't', 'a filed number is anonymized on the standby, for the portal role');
is($standby->safe_psql('postgres', q{SELECT anonymize.is_anonymized('95000002')}),
	'f', 'another number is not');
is($standby->safe_psql('postgres', q{SELECT anonymize.is_anonymized('')}),
	'f', 'an empty string is not, and raises nothing');
is($standby->safe_psql('postgres', 'SELECT string_agg(id::text, \',\' ORDER BY id) FROM archive.calls',
		extra_params => ['-U', 'portal']),
	'2', 'the guard hides the filed number\'s calls on the standby');

# a session opened before the request is filed sees it at its next
# statement after replay, inside an open transaction too
my $session = $standby->background_psql('postgres');
is($session->query_safe(q{SELECT anonymize.is_anonymized('95000002')}), 'f', 'not yet filed');
$session->query_safe('BEGIN');
$session->query_safe(q{SELECT anonymize.is_anonymized('95000002')});
$primary->safe_psql('postgres',
	q{INSERT INTO anonymize.anonymize_request (phone, email) VALUES ('95000002', 'Eve@Example.NO')});
$primary->wait_for_catchup($standby, 'replay', $primary->lsn('insert'));
is($session->query_safe(q{SELECT anonymize.is_anonymized('+4795000002')}), 't',
	'filed on the primary: counts in an open standby session at its next statement');
is($session->query_safe(q{SELECT anonymize.is_anonymized('"Eve" <eve@example.no>')}), 't',
	'its email too');
$session->query_safe('COMMIT');

$primary->safe_psql('postgres',
	q{DELETE FROM anonymize.anonymize_request WHERE phone = '95000002'});
$primary->wait_for_catchup($standby, 'replay', $primary->lsn('insert'));
is($session->query_safe(q{SELECT anonymize.is_anonymized('95000002')}), 'f',
	'cancelled on the primary: no longer anonymized on the standby');

# after a run on the primary, the standby answers from the replicated
# digests: the page no longer holds the number
$primary->safe_psql('postgres', 'SELECT anonymize.run()');
$primary->wait_for_catchup($standby, 'replay', $primary->lsn('insert'));
is($standby->safe_psql('postgres',
		q{SELECT status || ' ' || phone FROM anonymize.anonymize_request WHERE to_date = '2024-02-01'}),
	'Done ******01', 'the request is Done and masked on the standby');
is($session->query_safe(q{SELECT anonymize.is_anonymized('0047 950 00 001')}), 't',
	'a Done number is anonymized on the standby, in an open session');
is($standby->safe_psql('postgres', 'SELECT string_agg(id || caller, \',\' ORDER BY id) FROM archive.calls',
		extra_params => ['-U', 'portal']),
	'1Anonymized,2+4795000002', 'the portal sees the rewritten row on the standby');
$session->quit;

done_testing();
