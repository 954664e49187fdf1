# ALTER EXTENSION anonymize UPDATE from the released 1.0, in a database
# where 1.0 was used (targets registered and protected, requests filed,
# run, held, confirmed and cancelled), gives exactly the extension of a
# fresh CREATE EXTENSION of the default version: the same member objects
# with the same definitions, comments and privileges, and the same tables
# registered with pg_extension_config_dump; the requests survive it and the
# next run goes on from them.
#
# The two databases are compared with pg_dump --schema-only
# --binary-upgrade, which dumps each member of the extension on its own,
# with its ACL and the privileges the scripts gave it (pg_init_privs),
# leaving out the user's schema archive.  Only what says where an object
# is stored (OIDs, relfilenodes) or what a sequence holds differs between
# two identical extensions: those lines are filtered out, the rest must be
# identical, line for line.
#
# A TAP test rather than pg_regress: it needs two databases made in
# different ways and pg_dump, and shows the whole difference on failure.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use FindBin;
use lib $FindBin::RealBin;
use AnonymizeTest;

my $node = new_node('upgrade', settings => q{
anonymize.max_rows_per_request = 3
log_statement = none
});

my $default = $node->safe_psql('postgres',
	"SELECT default_version FROM pg_available_extensions WHERE name = 'anonymize'");
isnt($default, '1.0', "the default version ($default) is newer than the released 1.0");

# 1.0, installed and used
# the DBA's grants on functions that 1.1 re-creates, given in both
# databases: the update must keep them as the DBA's own
my $grants = q{
GRANT USAGE ON SCHEMA anonymize TO portal;
GRANT EXECUTE ON FUNCTION anonymize.preview(bigint) TO portal;
GRANT EXECUTE ON FUNCTION anonymize.status() TO portal WITH GRANT OPTION;
};
$node->safe_psql('postgres', 'CREATE ROLE portal');
$node->safe_psql('postgres', 'CREATE DATABASE used');
$node->safe_psql('used', q{
CREATE EXTENSION anonymize VERSION '1.0';
} . $grants . q{
CREATE SCHEMA archive;
CREATE TABLE archive.calls (id int PRIMARY KEY, caller text, started_at timestamptz NOT NULL);
CREATE TABLE archive.sms (id int PRIMARY KEY, sender text, at timestamptz NOT NULL);
INSERT INTO archive.calls VALUES
	(1, '98765432', '2024-01-10 12:00+01'),
	(2, '+47 987 65 432', '2024-01-11 12:00+01'),
	(3, '41111111', '2024-01-12 12:00+01'),
	(4, '+4741111111', '2024-01-13 12:00+01'),
	(5, '0047 41 11 11 11', '2024-01-14 12:00+01'),
	(6, '004741111111', '2024-01-15 12:00+01'),
	(7, '91234567', '2024-01-16 12:00+01');
INSERT INTO archive.sms VALUES
	(1, '98765432', '2024-01-10 12:00+01'),
	(2, 'Carol@Example.com', '2024-01-11 12:00+01');
SELECT anonymize.add_target('archive.calls', 'caller', 'phone', 'archive', 'started_at');
SELECT anonymize.add_target('archive.sms', 'sender', 'phone_or_email', 'sms_survey', 'at');
SELECT anonymize.protect('archive.calls');
INSERT INTO anonymize.anonymize_request (phone, to_date, comment, archive, sms_survey)
VALUES ('98765432', '2024-06-30', 'done', true, true);
INSERT INTO anonymize.anonymize_request (phone, to_date, comment)
VALUES ('41111111', '2024-06-30', 'held');
INSERT INTO anonymize.anonymize_request (phone, to_date, comment)
VALUES ('55555555', '2024-06-30', 'cancelled');
DELETE FROM anonymize.anonymize_request WHERE comment = 'cancelled';
});
is($node->safe_psql('used', 'SELECT anonymize.run()'), '1', '1.0: a run does one request');
$node->safe_psql('used', q{
SELECT anonymize.confirm(id) FROM anonymize.anonymize_request WHERE comment = 'held';
INSERT INTO anonymize.anonymize_request (email, to_date, comment, archive, sms_survey)
VALUES ('carol@example.com', '2024-06-30', 'waiting', false, true);
});

# what the upgrade must keep
my $state_sql = q{
SELECT string_agg(comment || ':' || status || ':' || coalesce(rows_anonymized, 0), ',' ORDER BY id)
	|| ' / ' || (SELECT count(*) FROM anonymize.request_log)
	|| ' receipts / ' || (SELECT count(*) FROM anonymize.request_private)
	|| ' private / ' || (SELECT string_agg(tbl::text || '.' || col, ',' ORDER BY tbl::text COLLATE "C") FROM anonymize.target)
	|| ' / ' || (SELECT string_agg(outcome, ',' ORDER BY id) FROM anonymize.run_log)
FROM anonymize.anonymize_request};
my $before = $node->safe_psql('used', $state_sql);
like($before, qr{^done:Done:3,held:Held:0,waiting:Waiting:0 / [1-9]\d* receipts / [1-9]\d* private / archive\.calls\.caller,archive\.sms\.sender / ok$},
	'1.0 was used: a Done, a confirmed Held and a Waiting request, receipts, targets, a run');

$node->safe_psql('used', 'ALTER EXTENSION anonymize UPDATE');
is($node->safe_psql('used', "SELECT extversion FROM pg_extension WHERE extname = 'anonymize'"),
	$default, "ALTER EXTENSION anonymize UPDATE: $default");
is($node->safe_psql('used', $state_sql), $before, 'the upgrade keeps every request, receipt and target');

$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('fresh', 'CREATE EXTENSION anonymize' . ";\n" . $grants);
is($node->safe_psql('used', q{SELECT has_function_privilege('portal', 'anonymize.preview(bigint)', 'EXECUTE')
	AND has_function_privilege('portal', 'anonymize.status()', 'EXECUTE WITH GRANT OPTION')}),
	't', "the update keeps the DBA's grants on re-created functions");
is($node->safe_psql('fresh', "SELECT extversion FROM pg_extension WHERE extname = 'anonymize'"),
	$default, "CREATE EXTENSION anonymize: $default");

# the extension's members, as pg_dump --binary-upgrade writes them, without
# what says where they are stored or what the sequences hold
sub members_dump
{
	my ($db) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run(
		[
			'pg_dump', '--schema-only', '--binary-upgrade',
			'--exclude-schema=archive', '-d', $node->connstr($db)
		],
		'>', \$out, '2>', \$err)
	  or die "pg_dump of $db failed: $err";
	my @lines = grep {
		!/^SELECT pg_catalog\.binary_upgrade_set_next_\w+\(/    # OIDs, relfilenodes
		  && !/^SELECT pg_catalog\.setval\(/                     # sequence values
		  && !/^\\(un)?restrict /                                 # a random key per dump
	} split /\n/, $out;
	for (@lines)
	{
		# the OIDs of the configuration tables (compared by name below)
		s/(binary_upgrade_create_empty_extension\(.*, )'\{[\d,]*\}'/$1'{oids}'/;
		# each table's oldest transaction, and its TOAST table's OID
		s/^SET relfrozenxid = '\d+', relminmxid = '\d+'$/SET relfrozenxid = 'xid', relminmxid = 'mxid'/;
		s/^WHERE oid = '\d+';$/WHERE oid = 'toast oid';/;
	}
	return join("\n", @lines) . "\n";
}

my $fresh = members_dump('fresh');
my $upgraded = members_dump('used');

# the dump is the extension's members, each on its own, not one CREATE
# EXTENSION line: the comparison below compares them
for my $member (
	'ALTER EXTENSION anonymize ADD TABLE anonymize.anonymize_request;',
	'ALTER EXTENSION anonymize ADD FUNCTION anonymize.run();',
	'ALTER EXTENSION anonymize ADD EVENT TRIGGER anonymize_guard_grants;',
	'CREATE TRIGGER anonymize_request_guard BEFORE INSERT OR DELETE OR UPDATE ON anonymize.anonymize_request',
	'COMMENT ON FUNCTION anonymize.is_anonymized(identifier text) IS',
	'REVOKE ALL ON FUNCTION anonymize.run() FROM PUBLIC;',
	'COMMENT ON EVENT TRIGGER anonymize_guard_grants IS')
{
	like($fresh, qr/^\Q$member\E/m, "the dump has: $member");
}

my $fresh_file = $node->basedir . '/fresh.sql';
my $upgraded_file = $node->basedir . '/upgraded.sql';
PostgreSQL::Test::Utils::append_to_file($fresh_file, $fresh);
PostgreSQL::Test::Utils::append_to_file($upgraded_file, $upgraded);
my ($diff, $derr) = ('', '');
IPC::Run::run([ 'diff', '-u', $fresh_file, $upgraded_file ], '>', \$diff, '2>', \$derr);
is($diff, '',
	'upgraded from 1.0 = fresh install: the same objects, definitions, comments and privileges');

# the configuration tables: every table and sequence that keeps the
# extension's data is dumped by pg_dump, in both
my $config_sql = q{
SELECT string_agg(c.oid::regclass::text || coalesce(' ' || nullif(x.cond, ''), ''), ',' ORDER BY c.oid::regclass::text COLLATE "C")
FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS x(rel, cond), pg_class c
WHERE e.extname = 'anonymize' AND c.oid = x.rel};
my $config = $node->safe_psql('fresh', $config_sql);
is($config,
	'anonymize.anonymize_request,anonymize.anonymize_request_id_seq,anonymize.ledger,'
	  . 'anonymize.request_log,anonymize.request_log_daily,anonymize.request_log_id_seq,'
	  . 'anonymize.request_private,anonymize.retention_log,anonymize.retention_log_id_seq,'
	  . 'anonymize.run_log,anonymize.run_log_id_seq,anonymize.secret,anonymize.target',
	'fresh install: the configuration tables are registered with pg_extension_config_dump');
is($node->safe_psql('used', $config_sql), $config,
	'upgraded: the same configuration tables');

# the ledger of the requests Done under 1.0, made by the update
is($node->safe_psql('used', q{
	SELECT string_agg(l.request_id || ':' || l.kind || ':' || l.source, ',' ORDER BY l.request_id, l.kind)
	  = (SELECT string_agg(r.id || ':' || k.kind || ':upgrade', ',' ORDER BY r.id, k.kind)
		 FROM anonymize.anonymize_request r JOIN anonymize.request_private p ON p.request_id = r.id,
			  LATERAL (VALUES ('phone', p.phone_digest), ('email', p.email_digest)) k(kind, digest)
		 WHERE r.status = 'Done' AND k.digest IS NOT NULL)
	  AND count(*) > 0
	FROM anonymize.ledger l}), 't',
	'upgraded: the ledger holds the digests of every request Done under 1.0');

# the upgraded extension goes on from its data
is($node->safe_psql('used', 'SELECT anonymize.run()'), '2',
	'after the upgrade, a run finishes the confirmed and the Waiting request');
is($node->safe_psql('used', q{SELECT string_agg(id || ':' || caller, ',' ORDER BY id) FROM archive.calls}),
	'1:Anonymized,2:Anonymized,3:Anonymized,4:Anonymized,5:Anonymized,6:Anonymized,7:91234567',
	'the archive is erased for the requests filed before and confirmed after the upgrade');
is($node->safe_psql('used', q{SELECT string_agg(id || ':' || sender, ',' ORDER BY id) FROM archive.sms}),
	'1:Anonymized,2:Anonymized', 'the SMS survey too');

log_has_no($node, '98765432', '41111111', '55555555', 'carol@example.com');

$node->stop;
done_testing();
