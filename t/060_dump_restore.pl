# t/060_dump_restore.pl: pg_dump and restore keep every request, target and
# receipt, and a later run works in the restored database.
#
# The page, the receipts, the keyed digests and their key, the targets and
# the run log are extension configuration tables (pg_extension_config_dump),
# so a plain pg_dump of the archive carries them.  We dump a database after
# one run (a Done request, a cancelled one, a Waiting one), restore it into
# a new database, compare every table of the extension and the archive
# tables row for row, then run there: the Waiting request is done, the Done
# one is left alone, new requests get new ids.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use AnonymizeTest;

my $node = new_node('dump_restore', settings => q{
anonymize.max_rows_per_request = 5
});

$node->safe_psql('postgres', 'CREATE DATABASE archive');
$node->safe_psql('archive', q{
CREATE EXTENSION anonymize;
CREATE SCHEMA cc;
CREATE TABLE cc.calls (id int PRIMARY KEY, caller text, started_at timestamptz NOT NULL);
CREATE TABLE cc.sms (id int PRIMARY KEY, number text, at timestamptz NOT NULL);
SELECT anonymize.add_target('cc.calls', 'caller', 'phone', 'archive', 'started_at');
SELECT anonymize.add_target('cc.sms', 'number', 'phone_or_email', 'sms_survey', 'at');
INSERT INTO cc.calls VALUES
	(1, '98765432', '2024-01-10 12:00+01'),
	(2, '+47 987 65 432', '2024-01-11 12:00+01'),
	(3, '91234567', '2024-01-12 12:00+01'),
	(4, '004612345678', '2024-01-13 12:00+01'),
	(5, '0047 912 34 567', '2024-01-14 12:00+01'),
	(6, '41111111', '2024-01-15 12:00+01'),
	(7, '+4741111111', '2024-01-15 12:00+01'),
	(8, '41 11 11 11', '2024-01-15 12:00+01'),
	(9, '004741111111', '2024-01-15 12:00+01'),
	(10, '41111111', '2024-01-16 12:00+01'),
	(11, '41111111', '2024-01-17 12:00+01');
INSERT INTO cc.sms VALUES
	(1, '98765432', '2024-01-10 12:00+01'),
	(2, 'Carol@Example.com', '2024-01-11 12:00+01'),
	(3, '91234567', '2024-01-12 12:00+01');
INSERT INTO anonymize.anonymize_request (phone, to_date, comment, archive, sms_survey)
VALUES ('98765432', '2024-06-01', 'first', true, true);
INSERT INTO anonymize.anonymize_request (phone, to_date, comment)
VALUES ('55555555', '2024-06-01', 'cancelled');
DELETE FROM anonymize.anonymize_request WHERE comment = 'cancelled';
INSERT INTO anonymize.anonymize_request (phone, to_date, comment)
VALUES ('41111111', '2024-06-01', 'held');
});
is($node->safe_psql('archive', 'SELECT anonymize.run()'), '1',
	'first run finishes one request and holds the one over the limit');
$node->safe_psql('archive', q{
SELECT anonymize.confirm(id) FROM anonymize.anonymize_request WHERE comment = 'held';
INSERT INTO anonymize.anonymize_request (phone, email, to_date, comment, archive, sms_survey)
VALUES ('912 34 567', 'carol@example.com', '2024-06-01', 'second', true, true);
});

# everything the extension keeps, and the archive tables, as text
my @snapshot_queries = (
	'SELECT id, phone, email, to_date, comment, archive, sms_survey, raw_data, status, user_name, created_at, done_at, rows_anonymized, error FROM anonymize.anonymize_request ORDER BY id',
	'SELECT * FROM anonymize.request_log ORDER BY id',
	'SELECT * FROM anonymize.request_private ORDER BY request_id',
	'SELECT id, md5(key), created_at FROM anonymize.secret',
	'SELECT * FROM anonymize.targets ORDER BY 1, 2',
	'SELECT * FROM anonymize.run_log ORDER BY id',
	'SELECT * FROM cc.calls ORDER BY id',
	'SELECT * FROM cc.sms ORDER BY id');
sub snapshot
{
	my ($db) = @_;
	return [ map { $node->safe_psql($db, $_) } @snapshot_queries ];
}
my $before = snapshot('archive');

# the state we dump is the one we meant to make
like($before->[0], qr/\|first\|t\|t\|f\|Done\|/, 'the first request is Done');
like($before->[0], qr/\|second\|t\|t\|f\|Waiting\|/, 'the second request is Waiting');
like($before->[0], qr/\|held\|t\|f\|f\|Held\|/, 'the third request is Held');
like($before->[1], qr/confirmed/, 'its confirmation has a receipt');
like($before->[2], qr/\|postgres$/m, 'its confirmation is kept');
unlike($before->[0], qr/98765432/, 'the Done request is masked');
like($before->[1], qr/cancelled/, 'the cancellation has its receipt');
like($before->[1], qr/rewrite/, 'the first run left rewrite receipts');
isnt($before->[3], '', 'the digest key exists');
like($before->[6], qr/^1\|Anonymized\|.*\n2\|Anonymized\|/s, 'the first run rewrote the archive');

my $dump = $node->basedir . '/archive.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr('archive') ],
	'pg_dump of the archive');
$node->safe_psql('postgres', 'CREATE DATABASE restored');
$node->command_ok([ 'pg_restore', '--exit-on-error', '-d', $node->connstr('restored'), $dump ],
	'pg_restore into a new database');

my $after = snapshot('restored');
for my $i (0 .. $#snapshot_queries)
{
	is($after->[$i], $before->[$i], "restored intact: $snapshot_queries[$i]");
}

# a later run works there, on the restored key and receipts
is($node->safe_psql('restored', 'SELECT anonymize.run()'), '2',
	'a run in the restored database finishes the Waiting and the confirmed Held request');
is($node->safe_psql('restored',
	"SELECT string_agg(comment || ':' || status || ':' || rows_anonymized, ',' ORDER BY id) FROM anonymize.anonymize_request"),
	'first:Done:3,held:Done:6,second:Done:4',
	'the first request untouched, the confirmed and the Waiting ones Done with their rows');
is($node->safe_psql('restored', q{SELECT string_agg(id || ':' || caller, ',' ORDER BY id) FROM cc.calls}),
	'1:Anonymized,2:Anonymized,3:Anonymized,4:004612345678,5:Anonymized,6:Anonymized,7:Anonymized,8:Anonymized,9:Anonymized,10:Anonymized,11:Anonymized',
	'the restored archive is erased for the second request too');
is($node->safe_psql('restored', q{SELECT string_agg(id || ':' || number, ',' ORDER BY id) FROM cc.sms}),
	'1:Anonymized,2:Anonymized,3:Anonymized',
	'SMS survey targets erased as well');
is($node->safe_psql('restored', q{
	SELECT count(*) FROM anonymize.request_log l JOIN anonymize.anonymize_request r ON r.id = l.request_id
	WHERE r.comment = 'second' AND l.event = 'rewrite'}), '2',
	'the second request has a receipt per target');
is($node->safe_psql('restored', q{
	SELECT count(*) FROM anonymize.request_log WHERE detail ~ '91234567|carol'}), '0',
	'no receipt holds an identifier');
is($node->safe_psql('restored',
	"INSERT INTO anonymize.anonymize_request (phone) VALUES ('40000000') RETURNING id"), '5',
	'new requests continue the restored id sequence');
is($node->safe_psql('restored', 'SELECT count(*) FROM anonymize.run_log'), '2',
	'the run log has the restored run and the new one');

# the source database was not touched by the run in the copy
like($node->safe_psql('archive', "SELECT status FROM anonymize.anonymize_request WHERE comment = 'second'"),
	qr/^Waiting$/, 'the original still waits');

$node->stop;
done_testing();
