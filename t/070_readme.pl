# Every command of the documentation, run in the order a reader meets
# them: README.md, then the reference files in doc/, then src/README.md
# and t/README.md, against one fresh cluster and the small example archive
# of the quick start (doc/example-archive.sql: archive.calls,
# archive.chats, archive.emails, sms.answers, raw.events), so that the
# documentation cannot go stale.
#
# - each ```sql block runs as one psql script in database "archive", as the
#   superuser; it must succeed, unless it has "-- fails: SQLSTATE" comments:
#   then exactly those errors, in that order, must happen;
# - each line of a ```sh block runs in bash (pg_anonymize on the PATH, the
#   cluster in PGHOST/PGPORT) and must exit 0, or with the status its
#   "# exits N" comment gives;
# - a ```sql or ```sh block right after a line "<!-- not run: REASON -->"
#   is not run: the install commands (tools/test.sh and tools/demo.sh
#   build and install the same way, into a private copy, and this cluster
#   gets the settings the install writes, plus anonymize.enabled = off so
#   that no scheduled run interferes) and the like; such blocks must stay
#   rare;
# - a block right after "<!-- file: PATH -->" must be PATH's content, byte
#   for byte; the quick start shows doc/example-archive.sql that way, and
#   once it has run the test fills the tables with the people of the
#   examples;
# - blocks in ```text (or with no language) are output, syntax or
#   diagrams, and are not run.
# A failure names the file and the line.
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
my $cli = -x "$top/cli/pg_anonymize" ? "$top/cli/pg_anonymize" : 'pg_anonymize';
my $example_archive = 'doc/example-archive.sql';

# The files whose blocks run, in a reader's order: each file's blocks run
# after those of the files before it (they use the quick start's targets,
# roles and requests).  Optional files may be absent or hold no block.
my @files = (
	{ path => 'README.md' },
	{ path => 'doc/request-page.md' },
	{ path => 'doc/phone-numbers.md' },
	{ path => 'doc/targets-and-run.md' },
	{ path => 'doc/run-writes.md' },
	{ path => 'doc/worker.md' },
	{ path => 'doc/search-hooks.md' },
	{ path => 'doc/settings.md' },
	{ path => 'doc/sql-api.md' },
	{ path => 'doc/privileges.md' },
	{ path => 'doc/monitoring.md' },
	{ path => 'doc/pg_anonymize.md' },
	{ path => 'doc/retention.md' },
	{ path => 'doc/erasure-coverage.md' },
	{ path => 'doc/page-bytes.md' },
	{ path => 'doc/citus.md' },
	{ path => 'doc/benchmarks.md' },
	{ path => 'doc/faq.md' },
	{ path => 'doc/upgrading.md' },
	{ path => 'src/README.md', optional => 1 },
	{ path => 't/README.md' },
);
# the most blocks that may be marked "not run", all files together
my $max_not_run = 3;

# every doc/*.md is in the list, so that none is left out of the test
my %listed = map { $_->{path} => 1 } @files;
foreach my $f (sort glob("$top/doc/*.md"))
{
	my $rel = 'doc/' . basename($f);
	ok($listed{$rel}, "$rel is in t/070_readme.pl's list of files");
}

# read_blocks(path): the fenced blocks of a file, with their language,
# first line, marker and text; markers and languages checked
sub read_blocks
{
	my ($rel) = @_;
	my (@blocks, $cur, $marker);
	open(my $fh, '<', "$top/$rel") or die "cannot read $rel: $!";
	my $line_no = 0;
	while (my $l = <$fh>)
	{
		$line_no++;
		if (defined $cur)
		{
			if ($l =~ /^```\s*$/)
			{
				push @blocks, $cur;
				undef $cur;
			}
			else
			{
				$cur->{text} .= $l;
			}
			next;
		}
		if ($l =~ /^```(\S*)\s*$/)
		{
			$cur = { file => $rel, lang => $1, line => $line_no, text => '', marker => $marker };
			undef $marker;
			# a block a reader would take for commands is run, or marked
			fail("$rel:$line_no: a ```$cur->{lang} block: tag it sql or sh to run it, text to show it")
			  if $cur->{lang} =~ /^(?:bash|shell|console|shell-session|psql|pgsql|plpgsql|postgres|postgresql)$/i;
			next;
		}
		fail("$rel:$marker->{line}: the marker is not right before a block")
		  if defined $marker;
		undef $marker;
		if ($l =~ /^<!--\s*not run:\s*(.*?)\s*-->\s*$/)
		{
			$marker = { kind => 'not run', reason => $1, line => $line_no };
		}
		elsif ($l =~ /^<!--\s*file:\s*(\S+)\s*-->\s*$/)
		{
			$marker = { kind => 'file', path => $1, line => $line_no };
		}
	}
	close $fh;
	fail("$rel:$cur->{line}: the block is not closed") if defined $cur;
	fail("$rel:$marker->{line}: the marker is not right before a block") if defined $marker;
	return @blocks;
}

my (@blocks, %text_of);
foreach my $f (@files)
{
	if ($f->{optional} && !-e "$top/$f->{path}")
	{
		note("$f->{path} does not exist: nothing to run");
		next;
	}
	$text_of{ $f->{path} } = slurp_file("$top/$f->{path}");
	push @blocks, read_blocks($f->{path});
}
ok(scalar(grep { $_->{lang} eq 'sql' && $_->{file} eq 'README.md' } @blocks) >= 7,
	'the README has its sql blocks');
ok(scalar(grep { $_->{lang} eq 'sql' } @blocks) >= 20, 'the documentation has its sql blocks');

# the exceptions: each says why, and they stay few
my @not_run = grep { $_->{marker} && $_->{marker}{kind} eq 'not run' } @blocks;
foreach my $b (@not_run)
{
	ok($b->{marker}{reason} ne '' && $b->{lang} =~ /^(?:sql|sh)$/,
		"$b->{file}:$b->{line}: a $b->{lang} block not run, because: $b->{marker}{reason}");
}
cmp_ok(scalar(@not_run), '<=', $max_not_run, 'few blocks are marked "not run"');

# blocks that are a file's content, byte for byte
my @file_blocks = grep { $_->{marker} && $_->{marker}{kind} eq 'file' } @blocks;
foreach my $b (@file_blocks)
{
	my $path = $b->{marker}{path};
	my $want = -e "$top/$path" ? slurp_file("$top/$path") : undef;
	ok(defined $want && $b->{text} eq $want, "$b->{file}:$b->{line}: the block is $path, byte for byte")
	  or diag(defined $want ? "the block:\n$b->{text}\n$path:\n$want" : "$path does not exist");
}
my @archive_blocks = grep { $_->{marker}{path} eq $example_archive } @file_blocks;
ok(@archive_blocks == 1 && $archive_blocks[0]{file} eq 'README.md' && $archive_blocks[0]{lang} eq 'sql',
	"the README's quick start shows $example_archive once, in a sql block");

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

# the people of the examples (Bob, 98765432 and bob.test@mytest.no; Erik,
# 004612345678), before and after their requests' dates, among other
# people: loaded into the example archive once the README has created it
my $example_people = q{
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
};

my $clidir = dirname($cli) eq '.' ? '' : dirname($cli);

# run_sql(block): one psql script; its error lines name the file's lines
sub run_sql
{
	my ($b) = @_;
	my $where = "$b->{file}:$b->{line}";
	my @want = $b->{text} =~ /--\s*fails:\s*([0-9A-Z]{5})/g;
	my ($out, $err) = ('', '');
	IPC::Run::run(
		[ 'psql', '-X', '-h', $node->host, '-p', $node->port, '-d', 'archive',
		  '-v', 'VERBOSITY=verbose', '-v', 'ON_ERROR_STOP=' . (@want ? 0 : 1), '-f', '-' ],
		'<', \$b->{text}, '>', \$out, '2>', \$err);
	my $rc = $? >> 8;
	my @got = $err =~ /^(?:psql:[^\n]*?)?ERROR:\s+([0-9A-Z]{5}):/mg;
	$err =~ s/^psql:<stdin>:(\d+):/"$b->{file}:" . ($b->{line} + $1) . ':'/mge;
	if (@want)
	{
		is_deeply(\@got, \@want, "$where: sql block fails with " . join(', ', @want))
		  or diag($err);
	}
	else
	{
		ok($rc == 0 && !@got, "$where: sql block runs") or diag($err);
	}
}

# run_sh(block): each command line in bash, with its expected exit status
sub run_sh
{
	my ($b) = @_;
	my @lines = split /\n/, $b->{text};
	for (my $i = 0; $i < @lines; $i++)
	{
		my $line_no = $b->{line} + 1 + $i;
		my $cmd = $lines[$i];
		$cmd .= "\n" . $lines[++$i] while $cmd =~ /\\$/ && $i + 1 < @lines;
		next if $cmd =~ /^\s*(?:#.*)?$/;
		my $want = $cmd =~ /#\s*exits\s+(\d+)/ ? $1 : 0;
		my ($out, $err) = ('', '');
		local $ENV{PATH} = $clidir ? "$clidir:$ENV{PATH}" : $ENV{PATH};
		local $ENV{PGHOST} = $node->host;
		local $ENV{PGPORT} = $node->port;
		IPC::Run::run([ 'bash', '-c', $cmd ], '<', \undef, '>', \$out, '2>', \$err);
		is($? >> 8, $want, "$b->{file}:$line_no: $cmd") or diag("$out\n$err");
	}
}

foreach my $b (@blocks)
{
	next unless $b->{lang} =~ /^(?:sql|sh)$/;
	next if $b->{marker} && $b->{marker}{kind} eq 'not run';
	if ($b->{lang} eq 'sql')
	{
		run_sql($b);
	}
	else
	{
		run_sh($b);
	}
	$node->safe_psql('archive', $example_people)
	  if $b->{marker} && $b->{marker}{kind} eq 'file' && $b->{marker}{path} eq $example_archive;
}

# the CLI reference's example of an error, printed as the server says it
my ($shown) = $text_of{'doc/pg_anonymize.md'} =~ /^\$ pg_anonymize -d archive cancel 1\n(.*?)^```/ms;
ok($shown, 'doc/pg_anonymize.md shows the refused cancel');
{
	my ($out, $err) = ('', '');
	IPC::Run::run([ $cli, '-h', $node->host, '-p', $node->port, '-d', 'archive', 'cancel', '1' ],
		'<', \undef, '>', \$out, '2>', \$err);
	is($err, $shown, 'the refused cancel prints what doc/pg_anonymize.md shows');
}

# the quick start ends with the archive forgetting Bob up to his date
is($node->safe_psql('archive',
	q{SELECT string_agg(caller, ',' ORDER BY id) FROM archive.calls WHERE recording LIKE 'rec/b%'}),
	'Anonymized,Anonymized,004798765432', 'Bob\'s calls up to his date are anonymized, the later one kept');
is($node->safe_psql('archive',
	q{SELECT count(*) FROM anonymize.anonymize_request WHERE status <> 'Done'}),
	'0', 'every request of the documentation ends Done');

$node->stop;
done_testing();
