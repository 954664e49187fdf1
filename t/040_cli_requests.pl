# pg_anonymize against a real server: --help, connection options, add, list,
# show and cancel, exit codes, and errors printed as the server's message,
# detail and hint.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use AnonymizeTest;

my $node = new_node('cli', settings => q{
log_statement = 'all'
log_parameter_max_length = 0
});
$node->safe_psql('postgres', 'CREATE EXTENSION anonymize');

my @conn = ('-h', $node->host, '-p', $node->port, '-d', 'postgres');

my ($rc, $out, $err);

# --help and --version
($rc, $out, $err) = cli('--help');
is($rc, 0, '--help exits 0');
like($out, qr/^Usage:\n  pg_anonymize \[OPTION\]\.\.\. COMMAND \[ID\]$/m, '--help: usage line');
for my $cmd (qw(add list show preview cancel confirm run status))
{
	like($out, qr/^  $cmd\b/m, "--help lists command $cmd");
}
for my $opt (qw(--phone --email --to-date --comment --archive --sms-survey
	--raw-data --user --status --no-progress --host --port --username --dbname))
{
	like($out, qr/\Q$opt\E\b/, "--help documents $opt");
}
like($out, qr/Exit status:\n  0 .*\n  1 .*\n.*\n  2 .*\n  3 /s, '--help documents the exit codes');
is((cli('-?'))[0], 0, '-? is --help');
($rc, $out) = cli('--version');
is($rc, 0, '--version exits 0');
like($out, qr/^pg_anonymize \(anonymize\) \d+\.\d+$/, '--version');

# usage errors: exit 2, with a hint
($rc, $out, $err) = cli(@conn);
is($rc, 2, 'no command: exit 2');
is($err, "pg_anonymize: error: no command given\npg_anonymize: hint: Try \"pg_anonymize --help\" for more information.\n",
	'no command: message and hint');
($rc, undef, $err) = cli(@conn, 'frobnicate');
is($rc, 2, 'unknown command: exit 2');
like($err, qr/unknown command "frobnicate"/, 'unknown command: message');
($rc, undef, $err) = cli(@conn, 'show');
is($rc, 2, 'show without id: exit 2');
($rc, undef, $err) = cli(@conn, 'show', '12x');
is($rc, 2, 'bad id: exit 2');
like($err, qr/invalid request id "12x"/, 'bad id: message');
($rc, undef, $err) = cli(@conn, 'list', '--phone=98765432');
is($rc, 2, 'option of another command: exit 2');
like($err, qr/option "--phone=98765432" is for command "add", not "list"/, 'option of another command: message');
($rc, undef, $err) = cli(@conn, 'add', '--comment=x');
is($rc, 2, 'add without identifier: exit 2');
($rc, undef, $err) = cli(@conn, '--bogus', 'list');
is($rc, 2, 'unknown option: exit 2');

# connection failure: exit 2, libpq's message once
($rc, $out, $err) = cli('-h', $node->host, '-p', '1', '-d', 'postgres', 'list');
is($rc, 2, 'connection failure: exit 2');
like($err, qr/^pg_anonymize: error: connection to server .* failed/, 'connection failure: message');

# add
($rc, $out, $err) = cli(@conn, 'add', '--phone=98765432', '--to-date=2024-02-21',
	'--comment=Ticket 4711');
is($rc, 0, 'add: exit 0');
like($out, qr/^request (\d+) added: Waiting, to date 2024-02-21$/, 'add: says the id');
my ($id1) = $out =~ /request (\d+)/;
($rc, $out) = cli(@conn, 'add', '--email=Bob <bob.test@mytest.no>', '--sms-survey',
	'--raw-data', '--user=paal');
is($rc, 0, 'add with scopes: exit 0');
my ($id2) = $out =~ /request (\d+)/;
is( $node->safe_psql('postgres',
		"SELECT format('%s|%s|%s|%s|%s|%s|%s|%s|%s', phone, email, to_date, comment, archive, sms_survey, raw_data, status, user_name)
		 FROM anonymize.anonymize_request ORDER BY id"),
	"98765432||2024-02-21|Ticket 4711|t|f|f|Waiting|postgres\n"
	  . "|Bob <bob.test\@mytest.no>|"
	  . $node->safe_psql('postgres', 'SELECT current_date')
	  . "||f|t|t|Waiting|paal",
	'add: rows on the page, scopes as given, archive by default');

# "-" reads the identifier from standard input: out of ps and shell history
{
	($rc) = cli({ stdin => "98765431\ncarol\@example.com\n" },
		@conn, 'add', '--phone=-', '--email=-', '--comment=from stdin');
	is($rc, 0, 'add --phone=- --email=-: exit 0');
	is( $node->safe_psql('postgres',
			"SELECT phone || ' ' || email FROM anonymize.anonymize_request WHERE comment = 'from stdin'"),
		'98765431 carol@example.com',
		'add --phone=- --email=-: both read from standard input, phone first');
	$node->safe_psql('postgres', "DELETE FROM anonymize.anonymize_request WHERE comment = 'from stdin'");
	($rc, undef, $err) = cli(@conn, 'add', '--phone=-');
	is($rc, 2, 'add --phone=- with nothing on standard input: exit 2');
	like($err, qr/--phone=- but nothing to read on standard input/, '... and says so');
}

# the identifier is a parameter, never in the statement text (the server
# here logs statements but not their parameters)
my $log = slurp_file($node->logfile);
like($log, qr/execute <unnamed>: INSERT INTO anonymize.anonymize_request/, 'add: the statement was logged');
log_has_no($node, '98765432', '98765431', 'bob.test', 'carol');

# an error from the server: message, detail, hint; nothing else; exit 1
($rc, $out, $err) = cli(@conn, 'add', '--phone=98x65432');
is($rc, 1, 'invalid phone: exit 1');
is($out, '', 'invalid phone: nothing on stdout');
like($err, qr/\Apg_anonymize: error: invalid phone number\npg_anonymize: detail: [^\n]+\npg_anonymize: hint: Enter a national number without country code[^\n]+\n\z/,
	'invalid phone: the server message, detail and hint only');
($rc, undef, $err) = cli(@conn, '--verbose', 'add', '--phone=98x65432');
like($err, qr/^pg_anonymize: error: invalid phone number \(SQLSTATE 22023\)$/m, '--verbose adds the SQLSTATE');
($rc, undef, $err) = cli(@conn, 'add', '--phone=98765432', '--to-date=2999-01-01');
is($rc, 1, 'future date: exit 1');
like($err, qr/error: to_date of an anonymize request must not be after today\n.*detail: .*\n.*hint: /,
	'future date: message, detail and hint');

# list: an aligned table
($rc, $out) = cli(@conn, 'list');
is($rc, 0, 'list: exit 0');
my @lines = split /\n/, $out;
like($lines[0], qr/^ id \|\s+phone\s+\|\s+email\s+\|\s+to date\s+\|\s+comment\s+\| archive \| sms survey \| raw data \| status\s+\| user name \| done \| rows \| error $/,
	'list: header');
like($lines[1], qr/^-+(\+-+)+$/, 'list: rule');
like($lines[2], qr/^\s+$id1 \| 98765432 \| +\| 2024-02-21 \| Ticket 4711 \| yes +\| no +\| no +\| Waiting \| postgres +\| +\| +\| +$/,
	'list: first request');
like($lines[3], qr/^\s+$id2 \| +\| Bob <bob.test\@mytest.no> \| \d{4}-\d\d-\d\d \| +\| no +\| yes +\| yes +\| Waiting \| paal/,
	'list: second request');
is($lines[4], '(2 rows)', 'list: row count');
is(length($lines[0]), length($lines[2]), 'list: columns aligned');
($rc, $out) = cli(@conn, 'list', '--status=Done');
like($out, qr/^\(0 rows\)$/m, 'list --status filters');
($rc, undef, $err) = cli(@conn, 'list', '--status=Finished');
is($rc, 1, 'list --status with a bad status: exit 1');
like($err, qr/error: invalid input value for enum anonymize.request_status: "Finished"/, 'bad status: the server says why');

# connection by conninfo string, and by the environment
($rc, $out) = cli('-d', 'host=' . $node->host . ' port=' . $node->port . ' dbname=postgres', 'list');
is($rc, 0, 'conninfo string as -d');
like($out, qr/\(2 rows\)/, 'conninfo string: same page');
{
	local $ENV{PGHOST} = $node->host;
	local $ENV{PGPORT} = $node->port;
	local $ENV{PGDATABASE} = 'postgres';
	($rc, $out) = cli('list');
	is($rc, 0, 'PG* environment');
	like($out, qr/\(2 rows\)/, 'PG* environment: same page');
}

# show: the request and its receipts
($rc, $out) = cli(@conn, 'show', $id1);
is($rc, 0, 'show: exit 0');
like($out, qr/^id +\| $id1\nphone +\| 98765432\nemail +\| \nto date +\| 2024-02-21\ncomment +\| Ticket 4711\narchive +\| yes\n/,
	'show: the request, one field a line');
like($out, qr/^Receipts\n +time +\| event +\| status +\| target +\| column \| rows \| detail $/m, 'show: receipts table');
like($out, qr/^ [\d: -]+ \| status +\| Waiting \|/m, 'show: the Waiting receipt');

# cancel: a Waiting request goes, its receipts stay
($rc, $out) = cli(@conn, 'cancel', $id2);
is($rc, 0, 'cancel: exit 0');
is($out, "request $id2 cancelled\n", 'cancel: says so');
($rc, $out) = cli(@conn, 'show', $id2);
is($rc, 0, 'show of a cancelled request: exit 0');
like($out, qr/^request $id2 is no longer on the page: it was cancelled\n/, 'show: cancelled');
like($out, qr/\| cancelled \|/, 'show: the cancellation receipt');
($rc, undef, $err) = cli(@conn, 'cancel', $id2);
is($rc, 1, 'cancel again: exit 1');
is($err, "pg_anonymize: error: anonymize request $id2 does not exist\n", 'cancel again: no such request');
($rc, undef, $err) = cli(@conn, 'show', '999999');
is($rc, 1, 'show of an unknown request: exit 1');
like($err, qr/error: anonymize request 999999 does not exist/, 'show of an unknown request: message');

# cancel of a request that is no longer Waiting: 55000, nicely
my $done = $node->safe_psql('postgres',
	"INSERT INTO anonymize.anonymize_request (phone, to_date, status, done_at, rows_anonymized)
	 VALUES ('******32', '2024-01-01', 'Done', now(), 3) RETURNING id");
($rc, $out, $err) = cli(@conn, 'cancel', $done);
is($rc, 1, 'cancel of a Done request: exit 1');
is($err,
	"pg_anonymize: error: anonymize request $done is Done and cannot be deleted\n"
	  . "pg_anonymize: detail: Only a Waiting request can be changed or cancelled.\n"
	  . "pg_anonymize: hint: A Held request is released with anonymize.confirm(); a Running, Done or Failed one is kept as the record of the erasure.\n",
	'cancel of a Done request: the server message, detail and hint');
($rc, undef, $err) = cli(@conn, '-v', 'cancel', $done);
like($err, qr/\(SQLSTATE 55000\)/, 'cancel of a Done request: SQLSTATE 55000 with --verbose');

# a role without grants: the server's refusal, exit 1
$node->safe_psql('postgres', 'CREATE ROLE nobody LOGIN');
($rc, undef, $err) = cli(@conn, '-U', 'nobody', 'list');
is($rc, 1, 'no privileges: exit 1');
like($err, qr/^pg_anonymize: error: permission denied for schema anonymize$/m, 'no privileges: the server says so');

$node->stop;
done_testing();
