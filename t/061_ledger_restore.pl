# t/061_ledger_restore.pl: Done stays done.  A backup taken before some
# requests were done, restored, is erased again by importing the current
# ledger and running: from a pg_dump restored into a new database, and from
# a base backup restored as a new cluster.  And rows written with an old
# time after a request is Done are erased by the next run.  All on a plain,
# a partitioned and an SMS-survey target; receipts say 'late'; nothing else
# changes; no identifier in the ledger file or the logs.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use AnonymizeTest;

# the test's own statements name identifiers: not logged (log_statement =
# all is the harness's default), so that the log shows what the extension
# itself writes
my $node = new_node('ledger', allows_streaming => 1, settings => q{
log_statement = none
});

$node->safe_psql('postgres', 'CREATE DATABASE archive');
$node->safe_psql('archive', q{
CREATE EXTENSION anonymize;
CREATE SCHEMA cc;
CREATE TABLE cc.calls (id int PRIMARY KEY, caller text, started_at timestamptz NOT NULL);
CREATE TABLE cc.events (id int, chatter text, at date NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE cc.events_2023 PARTITION OF cc.events FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
CREATE TABLE cc.events_2024 PARTITION OF cc.events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE cc.events_other PARTITION OF cc.events DEFAULT;
CREATE TABLE cc.sms (id int PRIMARY KEY, number text, at timestamptz NOT NULL);
SELECT anonymize.add_target('cc.calls', 'caller', 'phone', 'archive', 'started_at');
SELECT anonymize.add_target('cc.events', 'chatter', 'phone_or_email', 'archive', 'at');
SELECT anonymize.add_target('cc.sms', 'number', 'phone', 'sms_survey', 'at');
INSERT INTO cc.calls VALUES
	(1, '98765432', '2024-01-10 12:00+01'),
	(2, '91234567', '2024-01-11 12:00+01'),
	(3, '+47 912 34 567', '2024-03-01 12:00+01'),
	(4, '91234567', '2024-09-01 12:00+02'),
	(5, '41111111', '2024-01-12 12:00+01'),
	(6, '40000000', '2024-01-12 12:00+01');
INSERT INTO cc.events VALUES
	(1, 'carol@example.com', '2023-05-01'),
	(2, '004791234567', '2024-02-01'),
	(3, 'Carol@Example.COM', '2024-08-01'),
	(4, 'dave@example.com', '2023-05-01');
INSERT INTO cc.sms VALUES
	(1, '91234567', '2024-01-11 12:00+01'),
	(2, '98765432', '2024-01-11 12:00+01');
INSERT INTO anonymize.anonymize_request (phone, to_date, comment)
VALUES ('98765432', '2024-06-01', 'P1 before the backup');
});
is($node->safe_psql('archive', 'SELECT anonymize.run()'), '1', 'P1 is done before the backup');

# the backups: a dump of the database, a base backup of the cluster
my $dump = $node->basedir . '/archive.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr('archive') ],
	'pg_dump of the archive');
$node->backup('base');

# after the backups: P2 (archive and SMS survey) and P3 (phone and email)
$node->safe_psql('archive', q{
INSERT INTO anonymize.anonymize_request (phone, to_date, comment, archive, sms_survey)
VALUES ('91234567', '2024-06-01', 'P2 after the backup', true, true);
INSERT INTO anonymize.anonymize_request (phone, email, to_date, comment)
VALUES ('41111111', 'carol@example.com', '2024-06-01', 'P3 after the backup');
});
is($node->safe_psql('archive', 'SELECT anonymize.run()'), '2', 'P2 and P3 are done after it');
my ($p1, $p2, $p3) = split /\n/, $node->safe_psql('archive',
	'SELECT id FROM anonymize.anonymize_request ORDER BY id');

my %tables = (
	calls => 'SELECT string_agg(id || \':\' || caller, \',\' ORDER BY id) FROM cc.calls',
	events => 'SELECT string_agg(tableoid::regclass || \':\' || id || \':\' || chatter, \',\' ORDER BY id) FROM cc.events',
	sms => 'SELECT string_agg(id || \':\' || number, \',\' ORDER BY id) FROM cc.sms');
my %erased = (
	calls => '1:Anonymized,2:Anonymized,3:Anonymized,4:91234567,5:Anonymized,6:40000000',
	events => 'cc.events_2023:1:Anonymized,cc.events_2024:2:Anonymized,cc.events_2024:3:Carol@Example.COM,cc.events_2023:4:dave@example.com',
	sms => '1:Anonymized,2:98765432');
for my $t (sort keys %tables)
{
	is($node->safe_psql('archive', $tables{$t}), $erased{$t}, "archive: $t erased for P1, P2 and P3");
}

# the ledger, exported by the client: four digests, no identifier
my $ledger = $node->basedir . '/ledger.json';
my ($rc, $out, $err) = cli('-h', $node->host, '-p', $node->port, '-d', 'archive',
	'ledger', 'export', $ledger);
is($rc, 0, 'ledger export exits 0');
is($out, "ledger exported: 4 entries to $ledger\n", 'ledger export says how many entries');
my $doc = slurp_file($ledger);
like($doc, qr/"format": "anonymize ledger"/, 'the file is a ledger document');
my @identifiers = ('98765432', '91234567', '912 34 567', '41111111', 'carol@example.com',
	'987 65 432', '4791234567');
ok(!(grep { $doc =~ /\Q$_\E/i } @identifiers), 'the ledger file holds no identifier');

# the story of a restore: the old dump in a new database, the current
# ledger imported, a run
my %receipts_sql = (late => qq{
	SELECT string_agg(l.request_id || ':' || l.target || ':' || l.rows, ',' ORDER BY l.request_id, l.target)
	FROM anonymize.request_log l WHERE l.event = 'late'});
my $page_sql = 'SELECT id, phone, email, to_date, status, done_at, rows_anonymized FROM anonymize.anonymize_request ORDER BY id';

# check_restored(node, db, what): the import and the run in a restored copy
sub check_restored
{
	my ($n, $db, $what) = @_;
	is($n->safe_psql($db, 'SELECT caller FROM cc.calls WHERE id = 2'), '91234567',
		"$what: the copy still holds P2's calls");
	my $page = $n->safe_psql($db, $page_sql);
	my ($rc, $out, $err) = cli('-h', $n->host, '-p', $n->port, '-d', $db, 'ledger', 'import', $ledger);
	is($rc, 0, "$what: ledger import exits 0");
	is($out, "ledger imported: 3 entries added; the next run checks every row against the ledger\n",
		"$what: P2's and P3's digests are added, P1's was there");
	is($n->safe_psql($db, 'SELECT full_recheck FROM anonymize.ledger_state'), 't',
		"$what: the next run re-checks every row");
	is($n->safe_psql($db, "SELECT anonymize.is_anonymized('91234567')"), 't',
		"$what: is_anonymized() knows P2 from the ledger");
	is($n->safe_psql($db, 'SELECT anonymize.run()'), '0', "$what: the run finishes no request");
	for my $t (sort keys %tables)
	{
		is($n->safe_psql($db, $tables{$t}), $erased{$t}, "$what: $t erased as in the archive, nothing else");
	}
	is($n->safe_psql($db, $receipts_sql{late}),
		"$p2:cc.calls:2,$p2:cc.events:1,$p2:cc.sms:1,$p3:cc.calls:1,$p3:cc.events:1",
		"$what: late receipts per request and target");
	is($n->safe_psql($db, $page_sql), $page, "$what: the page is unchanged");
	is($n->safe_psql($db, 'SELECT full_recheck FROM anonymize.ledger_state'), 'f',
		"$what: the re-check is done");
	is($n->safe_psql($db, 'SELECT anonymize.run()'), '0', "$what: a second run");
	is($n->safe_psql($db, $receipts_sql{late}),
		"$p2:cc.calls:2,$p2:cc.events:1,$p2:cc.sms:1,$p3:cc.calls:1,$p3:cc.events:1",
		"$what: a second run erases nothing more");
	return;
}

$node->safe_psql('postgres', 'CREATE DATABASE restored');
$node->command_ok([ 'pg_restore', '--exit-on-error', '-d', $node->connstr('restored'), $dump ],
	'pg_restore of the old dump into a new database');
check_restored($node, 'restored', 'dump');
is($node->safe_psql('restored',
	"INSERT INTO anonymize.anonymize_request (phone) VALUES ('40000001') RETURNING id > $p3"), 't',
	'dump: new requests take ids past the imported ones');

my $copy = PostgreSQL::Test::Cluster->new('ledger_base_backup');
$copy->init_from_backup($node, 'base');
$copy->start;
check_restored($copy, 'archive', 'base backup');

# usage errors of the client
($rc, undef, $err) = cli('-h', $node->host, '-p', $node->port, '-d', 'archive', 'ledger');
is($rc, 2, 'ledger without export or import exits 2');
like($err, qr/^pg_anonymize: error: command "ledger" needs export or import$/m, 'ledger: the usage error');
($rc, undef, $err) = cli('-h', $node->host, '-p', $node->port, '-d', 'archive', 'ledger', 'export');
is($rc, 2, 'ledger export without a file exits 2');
like($err, qr/needs a file name/, 'ledger export: the usage error');
($rc, $out) = cli('-h', $node->host, '-p', $node->port, '-d', 'archive', 'ledger', 'export', '-');
is($rc, 0, 'ledger export - exits 0');
like($out, qr/^\{.*"format": "anonymize ledger".*\}\n\z/s, 'ledger export -: the document on standard output');

# an import into a database with another key is refused, changing nothing
$node->safe_psql('postgres', q{
CREATE DATABASE other;
});
$node->safe_psql('other', q{
CREATE EXTENSION anonymize;
INSERT INTO anonymize.anonymize_request (phone, to_date) VALUES ('40000002', '2024-01-01');
SELECT anonymize.run();
});
($rc, $out, $err) = cli('-h', $node->host, '-p', $node->port, '-d', 'other', 'ledger', 'import', $ledger);
is($rc, 1, 'import with another key exits 1');
like($err, qr/^pg_anonymize: error: the ledger was made with another digest key$/m,
	'import with another key: the error');
like($err, qr/restore anonymize\.secret/, 'import with another key: the hint says what to do');
is($node->safe_psql('other', 'SELECT count(*) FROM anonymize.ledger'), '1',
	'import with another key: nothing added');
($rc, undef, $err) = cli('-h', $node->host, '-p', $node->port, '-d', 'other', 'ledger', 'import',
	$node->basedir . '/missing.json');
is($rc, 1, 'import of a missing file exits 1');
like($err, qr/could not open file/, 'import of a missing file: the error');

# late rows: written with an old time after P2 is Done, erased by the next
# run; P2 stays Done with its done_at; after its to_date kept
my $p2_before = $node->safe_psql('archive',
	"SELECT status, done_at, rows_anonymized FROM anonymize.anonymize_request WHERE id = $p2");
$node->safe_psql('archive', q{
INSERT INTO cc.calls VALUES (7, '0047 912 34 567', '2024-02-02 12:00+01'), (8, '91234567', '2024-07-01 12:00+02');
INSERT INTO cc.events VALUES (5, '+4791234567', '2024-03-03'), (6, '91234567', '2025-03-03');
});
is($node->safe_psql('archive', 'SELECT anonymize.run()'), '0', 'late rows: a run finishes no request');
is($node->safe_psql('archive', 'SELECT string_agg(id || \':\' || caller, \',\' ORDER BY id) FROM cc.calls WHERE id > 6'),
	'7:Anonymized,8:91234567', 'late rows: the plain target');
is($node->safe_psql('archive', 'SELECT string_agg(tableoid::regclass || \':\' || id || \':\' || chatter, \',\' ORDER BY id) FROM cc.events WHERE id > 4'),
	'cc.events_2024:5:Anonymized,cc.events_other:6:91234567', 'late rows: the partitioned target');
is($node->safe_psql('archive', $receipts_sql{late}), "$p2:cc.calls:1,$p2:cc.events:1",
	'late rows: receipts of P2, per target');
is($node->safe_psql('archive', "SELECT detail::jsonb -> 'tables' FROM anonymize.request_log WHERE event = 'late' AND target = 'cc.events'"),
	'{"cc.events_2024": 1}', 'late rows: the partition in the receipt');
is($node->safe_psql('archive',
	"SELECT status, done_at, rows_anonymized FROM anonymize.anonymize_request WHERE id = $p2"),
	$p2_before, 'late rows: P2 stays Done, its done_at unchanged');
is($node->safe_psql('archive',
	"SELECT string_agg(status::text, ',' ORDER BY id) FROM anonymize.request_log WHERE request_id = $p2 AND event = 'status'"),
	'Waiting,Running,Done', 'late rows: no status change');

# no identifier in any server log
log_has_no($node, @identifiers);
log_has_no($copy, @identifiers);
like(slurp_file($node->logfile), qr/the ledger holds \d+ Done requests; checking every row once/,
	'the log says when a run checks every row');

$copy->stop;
$node->stop;
done_testing();
