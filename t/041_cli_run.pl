# pg_anonymize preview, confirm and run against a real server: run's plain
# progress lines when stdout is not a terminal, its progress bar on a
# terminal, its summary and exit code 3 when a request is Held; and the
# retention the run ends with.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use FindBin;
use lib $FindBin::RealBin;
use AnonymizeTest;

my $node = new_node('cli_run', settings => q{
anonymize.batch_size = 1000
anonymize.max_rows_per_request = 2500
anonymize.sms_survey_retention = '4 months'
});
$node->safe_psql('postgres', q{
CREATE EXTENSION anonymize;
CREATE TABLE calls (id serial PRIMARY KEY, caller text, started_at timestamptz NOT NULL);
INSERT INTO calls (caller, started_at)
SELECT CASE WHEN g <= 2000 THEN '+47 987 65 432' WHEN g <= 5000 THEN '22222222' ELSE '004612345678' END,
       now() - interval '2 days'
FROM generate_series(1, 6000) g;
CREATE TABLE sms_answer (phone text, answered_at timestamptz NOT NULL, answer text);
INSERT INTO sms_answer VALUES
	('+4791111111', now() - interval '6 months', 'old'),
	('+4791111112', now() - interval '5 months', 'old'),
	('+4791111113', now() - interval '1 month', 'recent');
SELECT anonymize.add_target('calls', 'caller', 'phone', 'archive', 'started_at');
SELECT anonymize.add_target('sms_answer', 'phone', 'phone', 'sms_survey', 'answered_at');
-- a request done two years ago: purged by the run's retention
INSERT INTO anonymize.anonymize_request (phone, to_date, comment, status, done_at, rows_anonymized)
VALUES ('******01', '2024-01-01', 'two years ago', 'Done', now() - interval '2 years', 7);
});

my @conn = ('-h', $node->host, '-p', $node->port, '-d', 'postgres');

my ($rc, $out, $err);

($rc, $out) = cli(@conn, 'add', '--phone=98765432', '--comment=caller');
my ($a) = $out =~ /request (\d+) added/;
($rc, $out) = cli(@conn, 'add', '--phone=22222222', '--comment=switchboard');
my ($b) = $out =~ /request (\d+) added/;
ok($a && $b, 'two requests added');

# preview: per target, and the total
($rc, $out) = cli(@conn, 'preview', $a);
is($rc, 0, 'preview: exit 0');
like($out, qr/^ target \| column \| rows $/m, 'preview: header');
like($out, qr/^ calls  \| caller \| 2000 $/m, 'preview: the archive target and its rows');
like($out, qr/^request $a would rewrite 2000 rows$/m, 'preview: total');
($rc, undef, $err) = cli(@conn, 'preview', '999999');
is($rc, 1, 'preview of an unknown request: exit 1');
like($err, qr/^pg_anonymize: error: /, 'preview of an unknown request: the server says why');

# confirm before anything is Held: the server's refusal with its hint
($rc, undef, $err) = cli(@conn, 'confirm', $a);
is($rc, 1, 'confirm of a Waiting request: exit 1');
like($err, qr/\Apg_anonymize: error: anonymize request $a is Waiting, not Held\npg_anonymize: hint: Only a request held by anonymize.max_rows_per_request needs a confirmation.\n\z/,
	'confirm of a Waiting request: message and hint');

# run, not on a terminal: plain lines.  Another session holds the run lock
# first, so that the run is seen waiting for it.
my $locker = $node->background_psql('postgres');
$locker->query_safe('SELECT pg_advisory_lock(1634627438, 1920298496)');
my ($rout, $rerr) = ('', '');
my $h = IPC::Run::start([ $cli, @conn, 'run', '--interval=0.1' ],
	'<', \undef, '>', \$rout, '2>', \$rerr,
	IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
$h->pump until $rout =~ /waiting for the run lock/;
$locker->query_safe('SELECT pg_advisory_unlock(1634627438, 1920298496)');
$h->finish;
$rc = $h->result(0);
is($rc, 3, 'run with a request Held: exit 3');
is($rerr, '', 'run: nothing on stderr');
my @lines = split /\n/, $rout;
is($lines[0], 'run started', 'run: first line');
is($lines[1], 'progress: anonymize run: waiting for the run lock', 'run: the wait, as a plain line');
like($lines[-1], qr/^run (\d+) ok: 1 done, 1 held, 0 failed, 2000 rows rewritten in \d+\.\d s$/,
	'run: the summary from anonymize.runs');
my ($run_id) = $lines[-1] =~ /^run (\d+)/;
is(scalar(grep { !/^progress: anonymize run( \d+)?: / } @lines[ 1 .. $#lines - 1 ]), 0,
	'run: every line between is a progress line');
unlike($rout, qr/\r/, 'run: no carriage returns when not on a terminal');
is($node->safe_psql('postgres', "SELECT outcome, requests_done, requests_held FROM anonymize.runs WHERE id = $run_id"),
	'ok|1|1', 'run: the summary is that run');

($rc, $out) = cli(@conn, 'list');
like($out, qr/^ +$a \| \*{6}32 .*\| Done +\| .*\| 2000 \| +$/m, 'list: the caller request Done and masked');
like($out, qr/^ +$b \| 22222222 .*\| Held +\| .*\| \S.*$/m, 'list: the switchboard request Held, with why');

($rc, $out) = cli(@conn, 'show', $a);
like($out, qr/^ [\d: -]+ \| rewrite \| +\| public\.calls \| caller +\| 2000 \|/m, 'show: the rewrite receipt');
like($out, qr/^ [\d: -]+ \| status +\| Done +\|/m, 'show: the Done receipt');

# a Held request cannot be cancelled; it is confirmed
($rc, undef, $err) = cli(@conn, 'cancel', $b);
is($rc, 1, 'cancel of a Held request: exit 1');
like($err, qr/^pg_anonymize: error: anonymize request $b is Held and cannot be deleted$/m, 'cancel of a Held request: 55000 message');
like($err, qr/^pg_anonymize: hint: A Held request is released with anonymize.confirm\(\)/m, 'cancel of a Held request: the hint says what to do');
($rc, $out) = cli(@conn, 'confirm', $b);
is($rc, 0, 'confirm: exit 0');
is($out, "request $b confirmed: the next run applies it\n", 'confirm: says so');

# run --no-progress: the summary only; exit 0
($rc, $out, $err) = cli(@conn, 'run', '--no-progress');
is($rc, 0, 'run with nothing held: exit 0');
like($out, qr/\Arun \d+ ok: 1 done, 0 held, 0 failed, 3000 rows rewritten in \d+\.\d s\n\z/, 'run --no-progress: one summary line');
is($node->safe_psql('postgres', "SELECT count(*) FROM calls WHERE caller = 'Anonymized'"), '5000', 'both requests applied');

# the run ended with retention: old answers anonymized, the old request purged
is($node->safe_psql('postgres', "SELECT string_agg(answer || '=' || phone, ',' ORDER BY answered_at) FROM sms_answer"),
	'old=Anonymized,old=Anonymized,recent=+4791111113', 'run: SMS-survey answers older than 4 months anonymized');
is($node->safe_psql('postgres', "SELECT count(*) FROM anonymize.anonymize_request WHERE comment = 'two years ago'"),
	'0', 'run: the two-year-old Done request purged');
is($node->safe_psql('postgres', "SELECT sum(requests_done), sum(rows_anonymized) FROM anonymize.request_log_daily"),
	'1|7', 'run: its counts kept per day');
is($node->safe_psql('postgres', "SELECT kind, coalesce(target, '-'), rows FROM anonymize.retention_log ORDER BY id"),
	"requests|-|1\nsms_survey|sms_answer|2", 'run: retention_log');

# the run vacuumed the answers it rewrote: no old row version keeps a number
$node->poll_query_until('postgres',
	"SELECT vacuumed_at IS NOT NULL FROM anonymize.runs ORDER BY id DESC LIMIT 1")
  or die 'timed out waiting for the run to vacuum';
$node->safe_psql('postgres', 'CREATE EXTENSION pageinspect');
is( $node->safe_psql('postgres', q{
		SELECT count(*) FROM generate_series(0, pg_relation_size('sms_answer') / 8192 - 1) AS p,
			LATERAL heap_page_items(get_raw_page('sms_answer', p::int)) AS i
		WHERE position(convert_to('+479111111', 'UTF8') IN i.t_data) > 0}),
	'1', 'run: only the recent answer keeps its number, in any row version on disk');

# status: the worker, its schedule, what it does now, the last run
($rc, $out) = cli(@conn, 'status');
is($rc, 0, 'status: exit 0');
like($out, qr/^worker +\| \w[\w ]* \(pid \d+\), serving database postgres\n/, 'status: the worker and its database');
like($out, qr/^schedule +\| off \(anonymize.enabled = off\): runs only on run\(\) or wake\(\)$/m, 'status: the schedule');
like($out, qr/^next run +\| -$/m, 'status: no next run while disabled');
like($out, qr/^now +\| \S.*$/m, 'status: what the worker does now');
like($out, qr/^run\(\) now +\| none$/m, 'status: no run() at work');
my $last = $node->safe_psql('postgres', 'SELECT max(id) FROM anonymize.runs');
like($out, qr/^last run +\| run $last, [\d: -]+ \(run\(\)\), ok in \d+\.\d s: 1 done, 0 held, 0 failed, 3000 rows rewritten$/m,
	'status: the last run');

# Ctrl-C: run() is cancelled, the run it started goes on in the background
cli(@conn, 'add', '--phone=55555555', '--comment=cancelled wait');
$locker->query_safe('SELECT pg_advisory_lock(1634627438, 1920298496)');
($rout, $rerr) = ('', '');
$h = IPC::Run::start([ $cli, @conn, 'run', '--interval=0.1' ],
	'<', \undef, '>', \$rout, '2>', \$rerr,
	IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
$h->pump until $rout =~ /waiting for the run lock/;
$h->signal('INT');
$h->finish;
is($h->result(0), 1, 'run interrupted: exit 1');
is($rerr,
	"pg_anonymize: cancel requested\n"
	  . "pg_anonymize: error: canceling statement due to user request\n"
	  . "pg_anonymize: hint: A run that had started goes on in the background; \"pg_anonymize status\" shows it.\n",
	'run interrupted: the cancel, the server message and the hint');
($rc, $out) = cli(@conn, 'status');
like($out, qr/^run\(\) now +\| anonymize run: waiting for the run lock \(pid \d+\)$/m,
	'status: the run() still at work');
$locker->query_safe('SELECT pg_advisory_unlock(1634627438, 1920298496)');
$node->poll_query_until('postgres',
	"SELECT status = 'Done' FROM anonymize.anonymize_request WHERE comment = 'cancelled wait'")
  or die 'timed out waiting for the background run';
pass('the run goes on after the interrupted client and finishes the request');

# on a terminal: a progress bar redrawn in place
SKIP:
{
	skip 'IO::Pty is not installed', 3 unless eval { require IO::Pty; 1 };
	cli(@conn, 'add', '--phone=004612345678');
	$locker->query_safe('SELECT pg_advisory_lock(1634627438, 1920298496)');
	my $tout = '';
	my $t = IPC::Run::start([ $cli, @conn, 'run', '--interval=0.1' ],
		'<pty<', \undef, '>pty>', \$tout,
		IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
	$t->pump until $tout =~ /waiting for the run lock/;
	$locker->query_safe('SELECT pg_advisory_unlock(1634627438, 1920298496)');
	$t->finish;
	is($t->result(0), 0, 'run on a terminal: exit 0');
	like($tout, qr/\r\[[|\/\\-]\] anonymize run: waiting for the run lock/, 'run on a terminal: the bar line, redrawn with \r');
	like($tout, qr/\r\[#{30}\] 100% .*\r?\nrun \d+ ok: 1 done, 0 held, 0 failed, 1000 rows rewritten/s,
		'run on a terminal: a full bar, then the summary');
}
$locker->quit;

$node->stop;
done_testing();
