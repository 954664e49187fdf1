# Rejected input on the Anonymize page never puts an identifier in the
# server log: not in the error, not in the statement, not in a COPY line,
# not in a "failing row" detail.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use AnonymizeTest;

my $node = new_node('page', settings => q{
log_min_error_statement = error
log_statement = none
log_error_verbosity = verbose
});
$node->safe_psql('postgres', 'CREATE EXTENSION anonymize');

# log_statement = all (the test harness's default) logs every statement
# with its literals: the README tells portal authors to use bind parameters
# and DBAs to keep log_statement off on the archive.  Here we check what
# the extension itself writes.

# identifiers that appear nowhere else (not in hints or examples)
my @secrets = ('41526374', '41x26374', 'zed.quist@example.org', '0046 731 55 66');

my @bad = (
	q{INSERT INTO anonymize.anonymize_request (phone) VALUES ('41x26374')},
	q{INSERT INTO anonymize.anonymize_request (phone, archive) VALUES ('41526374', false)},
	q{INSERT INTO anonymize.anonymize_request (email, archive) VALUES ('zed.quist@example.org', NULL)},
	q{INSERT INTO anonymize.anonymize_request (email, to_date) VALUES ('zed.quist@example.org', current_date + 1)},
	q{INSERT INTO anonymize.anonymize_request (phone, status) VALUES ('0046 731 55 66', 'Done')},
	q{SELECT anonymize.normalize_phone('41x26374')},
	q{SELECT anonymize.normalize_email('zed.quist@example')},
);
for my $sql (@bad)
{
	my ($ret, $out, $err) = $node->psql('postgres', $sql);
	isnt($ret, 0, "rejected: " . substr($sql, 0, 60));
}

# COPY: the bad line would be quoted in the error's context
my ($ret, $out, $err) = $node->psql('postgres',
	"COPY anonymize.anonymize_request (phone, comment) FROM STDIN;\n41526374\tok\n41x26374\tbad\n\\.\n");
like($err, qr/invalid phone number/, 'COPY with a bad line fails');
is($node->safe_psql('postgres', 'SELECT count(*) FROM anonymize.anonymize_request'),
	'0', 'nothing was stored');

# a row that is no longer Waiting, then edits of it
$node->safe_psql('postgres', q{INSERT INTO anonymize.anonymize_request (phone, to_date, status) VALUES ('****74', '2024-01-01', 'Done')});
($ret) = $node->psql('postgres',
	q{UPDATE anonymize.anonymize_request SET phone = '41526374'});
isnt($ret, 0, 'a Done row cannot be edited');

my $log = slurp_file($node->logfile);
like($log, qr/invalid phone number/, 'the errors are in the log');
log_has_no($node, @secrets);

$node->stop;
done_testing();
