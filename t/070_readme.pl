# Every command of README.md, run in the order the README gives them,
# against a fresh cluster and the small example archive the README's quick
# start talks about (archive.calls, archive.chats, archive.emails,
# sms.answers, raw.events), so that the README cannot go stale.
#
# - each ```sql block runs as one psql script in database "archive", as the
#   superuser; it must succeed, unless it has "-- fails: SQLSTATE" comments:
#   then exactly those errors, in that order, must happen;
# - in each ```sh block, every line that runs pg_anonymize runs in a shell
#   and must exit 0, or with the status its "# exits N" comment gives.
#   The install commands at the top are not run here: the test and demo
#   commands build and install the same way, into a private copy, and this
#   cluster gets the settings the install writes (and anonymize.enabled =
#   off, so that no scheduled run interferes).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use File::Basename;
use File::Spec;
use IPC::Run;

# the source tree (PGXS of 15 sets TESTDIR to it, 17 and later do not)
my $top = dirname(dirname(File::Spec->rel2abs(__FILE__)));
my $cli = -x "$top/pg_anonymize" ? "$top/pg_anonymize" : 'pg_anonymize';
my $readme = "$top/README.md";

# the README's blocks, in order
open(my $fh, '<', $readme) or die "cannot read $readme: $!";
my (@blocks, $cur);
my $line_no = 0;
my $text_all = '';
while (my $l = <$fh>)
{
	$text_all .= $l;
	$line_no++;
	if (!defined $cur && $l =~ /^```(sql|sh)\s*$/)
	{
		$cur = { lang => $1, text => '', line => $line_no };
	}
	elsif (defined $cur && $l =~ /^```\s*$/)
	{
		push @blocks, $cur;
		undef $cur;
	}
	elsif (defined $cur)
	{
		$cur->{text} .= $l;
	}
}
close $fh;
ok(scalar(grep { $_->{lang} eq 'sql' } @blocks) >= 20, 'the README has its sql blocks');

my $node = PostgreSQL::Test::Cluster->new('readme');
$node->init;
# what the README's install step puts in the configuration
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'anonymize'
anonymize.database = 'archive'
anonymize.country_code = '47'
anonymize.timezone = 'Europe/Oslo'
anonymize.enabled = off
timezone = 'Europe/Oslo'
});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE archive');

# the example archive of the quick start: the people of the examples (Bob,
# 98765432 and bob.test@mytest.no; Erik, 004612345678), before and after
# their requests' dates, among other people
$node->safe_psql('archive', q{
CREATE SCHEMA archive;
CREATE SCHEMA sms;
CREATE SCHEMA raw;
CREATE TABLE archive.calls (id bigserial PRIMARY KEY, caller text, queue text,
                            started_at timestamptz NOT NULL, recording text);
CREATE INDEX ON archive.calls (caller);
CREATE TABLE archive.chats (id bigserial PRIMARY KEY, chatter_id text, queue text,
                            started_at timestamp NOT NULL, log text);
CREATE TABLE archive.emails (id bigserial PRIMARY KEY, from_address text, subject text,
                             received_on date NOT NULL);
CREATE TABLE sms.answers (id bigserial PRIMARY KEY, number text, score int,
                          answered_at timestamptz NOT NULL);
CREATE TABLE raw.events (id bigserial, number text, event text, at timestamptz NOT NULL)
	PARTITION BY RANGE (at);
CREATE TABLE raw.events_2023 PARTITION OF raw.events FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
CREATE TABLE raw.events_2024 PARTITION OF raw.events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE raw.events_rest PARTITION OF raw.events DEFAULT;
INSERT INTO archive.calls (caller, queue, started_at, recording)
SELECT '+47 9' || lpad((g * 7919 % 9000000)::text, 7, '0'), 'queue ' || g % 5,
       '2023-06-01'::timestamptz + g * interval '1 hour', 'rec/' || g
FROM generate_series(1, 500) g;
INSERT INTO archive.calls (caller, queue, started_at, recording) VALUES
 ('98765432', 'support', '2024-02-01 10:00+01', 'rec/b1'),
 ('+47 987 65 432', 'support', '2024-02-21 23:30+01', 'rec/b2'),
 ('004798765432', 'support', '2024-02-22 00:10+01', 'rec/b3'),
 ('004612345678', 'int', '2024-01-10 12:00+01', 'rec/e1'),
 ('+46 12 345 678', 'int', '2024-03-10 12:00+01', 'rec/e2');
INSERT INTO archive.chats (chatter_id, queue, started_at, log) VALUES
 ('Bob.Test@MyTest.no', 'chat', '2024-02-10 10:00', 'log/b1'),
 ('"Bob" <bob.test@mytest.no>', 'chat', '2024-02-22 10:00', 'log/b2'),
 ('tel:98765432', 'chat', '2024-01-10 10:00', 'log/b3'),
 ('someone@example.com', 'chat', '2024-01-10 10:00', 'log/o1');
INSERT INTO archive.emails (from_address, subject, received_on) VALUES
 ('bob.test@mytest.no', 'my order', '2024-02-21'), ('BOB.TEST@MYTEST.NO', 'again', '2024-02-22'),
 ('someone@example.com', 'hello', '2024-01-01');
INSERT INTO sms.answers (number, score, answered_at) VALUES
 ('004612345678', 2, '2024-01-10 12:05+01'), ('+4798765432', 5, '2024-02-01 09:10+01'),
 ('+4791234567', 4, '2024-02-01 09:10+01');
INSERT INTO raw.events (number, event, at) VALUES
 ('004798765432', 'call offered', '2024-02-01 09:00+01'), ('98765432', 'call answered', '2024-02-01 09:00:05+01'),
 ('004612345678', 'call offered', '2024-01-10 12:00+01');
});

my $clidir = dirname($cli) eq '.' ? '' : dirname($cli);

foreach my $b (@blocks)
{
	my $where = "README.md line $b->{line}";
	if ($b->{lang} eq 'sql')
	{
		my @want = $b->{text} =~ /--\s*fails:\s*([0-9A-Z]{5})/g;
		my ($out, $err) = ('', '');
		IPC::Run::run(
			[ 'psql', '-X', '-h', $node->host, '-p', $node->port, '-d', 'archive',
			  '-v', 'VERBOSITY=verbose', '-v', 'ON_ERROR_STOP=' . (@want ? 0 : 1), '-f', '-' ],
			'<', \$b->{text}, '>', \$out, '2>', \$err);
		my $rc = $? >> 8;
		my @got = $err =~ /^(?:psql:[^\n]*?)?ERROR:\s+([0-9A-Z]{5}):/mg;
		if (@want)
		{
			is_deeply(\@got, \@want, "$where: fails with " . join(', ', @want))
			  or diag("$b->{text}\n$err");
		}
		else
		{
			ok($rc == 0 && !@got, "$where: sql block runs") or diag("$b->{text}\n$err");
		}
	}
	else
	{
		foreach my $cmd (split /\n/, $b->{text})
		{
			next unless $cmd =~ /(?:^|\|\s*)pg_anonymize\b/;
			my $want = $cmd =~ /#\s*exits\s+(\d+)/ ? $1 : 0;
			my ($out, $err) = ('', '');
			local $ENV{PATH} = $clidir ? "$clidir:$ENV{PATH}" : $ENV{PATH};
			local $ENV{PGHOST} = $node->host;
			local $ENV{PGPORT} = $node->port;
			IPC::Run::run([ 'bash', '-c', $cmd ], '<', \undef, '>', \$out, '2>', \$err);
			is($? >> 8, $want, "$where: $cmd") or diag("$out\n$err");
		}
	}
}

# the README's example of an error, printed as the server says it
my ($shown) = $text_all =~ /^\$ pg_anonymize -d archive cancel 1\n(.*?)^```/ms;
ok($shown, 'the README shows the refused cancel');
{
	my ($out, $err) = ('', '');
	IPC::Run::run([ $cli, '-h', $node->host, '-p', $node->port, '-d', 'archive', 'cancel', '1' ],
		'<', \undef, '>', \$out, '2>', \$err);
	is($err, $shown, 'the refused cancel prints what the README shows');
}

# the quick start ends with the archive forgetting Bob up to his date
is($node->safe_psql('archive',
	q{SELECT string_agg(caller, ',' ORDER BY id) FROM archive.calls WHERE recording LIKE 'rec/b%'}),
	'Anonymized,Anonymized,004798765432', 'Bob\'s calls up to his date are anonymized, the later one kept');
is($node->safe_psql('archive',
	q{SELECT count(*) FROM anonymize.anonymize_request WHERE status <> 'Done'}),
	'0', 'every request of the README ends Done');

$node->stop;
done_testing();
