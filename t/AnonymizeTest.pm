# t/AnonymizeTest.pm: what the TAP tests of anonymize share (POD below)

=pod

=head1 NAME

AnonymizeTest - what the TAP tests of the anonymize extension share

=head1 SYNOPSIS

  use FindBin;
  use lib $FindBin::RealBin;
  use AnonymizeTest;

  # a started node with the project's settings (test.conf), plus this
  # test's own lines
  my $node = new_node('cli', settings => q{
  anonymize.batch_size = 500
  });
  $node->safe_psql('postgres', 'CREATE EXTENSION anonymize');

  # the command-line client
  my ($rc, $out, $err) = cli('-h', $node->host, '-p', $node->port, 'list');

  # the worker, seen through anonymize.status()
  wait_status($node, "worker_state = 'waiting'", 'the worker to wait');
  is(status($node, 'last_outcome'), 'ok', 'the last run went well');

  # no identifier anywhere in the server log
  log_has_no($node, '98765432', 'bob@example.com');

  # nor in any page of the targets and the anonymize schema (pageinspect)
  pages_have_no($node, 'postgres', 'all', '98765432', 'Bob@Example.com');

=head1 DESCRIPTION

AnonymizeTest holds what the t/*.pl files would otherwise each repeat: a
node configured like every other test instance of the project (the same
F<test.conf> that C<make installcheck> gives its temporary instances), the
path of the pg_anonymize client and a way to run it, the polling of
C<anonymize.status()>, and the check that the server log names no
identifier.

It relies only on what PostgreSQL::Test::Cluster and
PostgreSQL::Test::Utils offer alike in PostgreSQL 15, 17 and 18.  The tests
load it with C<use lib $FindBin::RealBin>, so that it is found whatever
the directory prove runs in (PGXS's C<prove_installcheck> runs in the
source directory).

Every function below is exported.

=cut

package AnonymizeTest;

use strict;
use warnings;

use Exporter 'import';
use File::Basename qw(dirname);
use File::Spec;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

our @EXPORT = qw(
  $cli
  new_node
  cli
  status
  wait_status
  log_has_no
  page_hits
  pages_have_no
);

# the settings every test instance starts from, next to the Makefile
my $test_conf =
  File::Spec->catfile(dirname(File::Spec->rel2abs(__FILE__)), '..', 'test.conf');

=pod

=head1 VARIABLES

=over

=item $cli

The pg_anonymize to test: the one C<make> built in F<cli/> of the build
directory (this file's parent: PGXS of 15 sets C<$ENV{TESTDIR}> to it, 17
and later do not), else the one on the PATH, which
PGXS starts with PostgreSQL's bindir, where C<make install> put it.

=back

=cut

my $top = File::Basename::dirname(
	File::Basename::dirname(File::Spec->rel2abs(__FILE__)));
our $cli =
  -x "$top/cli/pg_anonymize"
  ? "$top/cli/pg_anonymize"
  : 'pg_anonymize';

=pod

=head1 FUNCTIONS

=over

=item new_node(name, settings => lines, init parameters...)

Creates the node I<name> with PostgreSQL::Test::Cluster, initializes it
(the remaining parameters, such as C<< allows_streaming => 1 >>, go to
C<init>), appends F<test.conf> to its postgresql.conf and then the lines of
C<settings>, which thus override it (C<shared_preload_libraries = ''> for a
test without the worker, C<anonymize.enabled = on> for one of the
schedule), starts it and returns it.  The extension is not created: tests
differ in when they do it.

=cut

sub new_node
{
	my ($name, %params) = @_;
	my $settings = delete $params{settings};

	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(%params);
	$node->append_conf('postgresql.conf',
		"\n# test.conf\n" . slurp_file($test_conf));
	$node->append_conf('postgresql.conf', "\n# this test's own\n$settings")
	  if defined $settings;
	$node->start;
	return $node;
}

=pod

=item cli([{ stdin => text },] args...)

Runs C<$cli> with I<args>, standard input empty (or I<text>), and returns
its exit status, standard output and standard error:
C<($rc, $out, $err)>.

=cut

sub cli
{
	my $opts = ref $_[0] eq 'HASH' ? shift : {};
	my ($in, $out, $err) = ($opts->{stdin}, '', '');
	IPC::Run::run([ $cli, @_ ], '<', \$in, '>', \$out, '2>', \$err);
	return ($? >> 8, $out, $err);
}

=pod

=item status(node, column)

The value of I<column> (any expression over its columns) of
C<anonymize.status()> in database postgres of I<node>.

=cut

sub status
{
	my ($node, $col) = @_;
	return $node->safe_psql('postgres', "SELECT $col FROM anonymize.status()");
}

=pod

=item wait_status(node, condition, what)

Polls C<anonymize.status()> in database postgres of I<node> until
I<condition> holds; dies with "timed out waiting for I<what>" if it never
does.

=cut

sub wait_status
{
	my ($node, $cond, $what) = @_;
	$node->poll_query_until('postgres',
		"SELECT $cond FROM anonymize.status()")
	  or die "timed out waiting for $what";
	return;
}

=pod

=item log_has_no(node, identifiers...)

One test: the server log of I<node>, read whole, holds none of the
I<identifiers>, compared without regard to case (an email address is the
same in any case).  On failure, the ones found are listed.

=cut

sub log_has_no
{
	my ($node, @identifiers) = @_;
	my $log = slurp_file($node->logfile);
	my @found = grep { $log =~ /\Q$_\E/i } @identifiers;
	my $ok = ok(!@found,
		'the server log of node ' . $node->name . ' holds none of '
		  . scalar(@identifiers) . ' identifiers');
	diag('found in the server log: ' . join(', ', @found)) if @found;
	return $ok;
}

=pod

=item page_hits(node, db, relations, strings...)

The pages of I<relations> in database I<db> of I<node> whose raw bytes,
read with pageinspect's C<get_raw_page()>, hold one of the I<strings>
(byte for byte: give each format and case an identifier was stored in):
C<"relation:pages,..."> in the order of the names, C<''> when none.
I<relations> is an array of names, or C<'all'>: every table of the
anonymize schema and every target table, with their indexes, their TOAST
tables and the TOAST tables' indexes.  Every page is read: the tuples,
the line pointers and the free space.  Needs C<CREATE EXTENSION
pageinspect> in I<db>; reads only, so it works on a standby too.

=cut

sub page_hits
{
	my ($node, $db, $rels, @strings) = @_;
	my $quote = sub { my $v = shift; $v =~ s/'/''/g; return "'$v'"; };
	my $arr = join(', ', map { $quote->($_) } @strings);
	my $tables = ref $rels
	  ? 'SELECT unnest(ARRAY[' . join(', ', map { $quote->($_) } @$rels) . ']::regclass[])::oid'
	  : q{SELECT c.oid FROM pg_class c
			WHERE c.relkind IN ('r', 'm')
			  AND (c.relnamespace = 'anonymize'::regnamespace
			       OR c.oid IN (SELECT tbl FROM anonymize.target))};
	# with 'all', the tables' indexes and TOAST; named relations as they are
	my $all = ref $rels ? 'false' : 'true';
	return $node->safe_psql($db, qq{
		WITH tbl AS ($tables),
		toast AS (
			SELECT reltoastrelid AS oid FROM pg_class
			WHERE $all AND oid IN (SELECT * FROM tbl) AND reltoastrelid <> 0),
		rel AS (
			SELECT * FROM tbl UNION SELECT oid FROM toast
			UNION SELECT indexrelid FROM pg_index
			WHERE $all AND indrelid IN (SELECT * FROM tbl UNION SELECT oid FROM toast))
		SELECT coalesce(string_agg(name || ':' || pages, ',' ORDER BY name), '')
		FROM (SELECT r.oid::regclass::text AS name, count(DISTINCT b) AS pages
		      FROM rel AS r(oid),
		           generate_series(0, pg_relation_size(r.oid) / current_setting('block_size')::int - 1) AS b,
		           unnest(ARRAY[$arr]::text[]) AS s(str)
		      WHERE position(convert_to(s.str, 'UTF8')
		                     IN get_raw_page(r.oid::regclass::text, b::int)) > 0
		      GROUP BY 1) h});
}

=pod

=item pages_have_no(node, db, relations, strings...)

One test: C<page_hits()> finds none of the I<strings> in any page of
I<relations> (C<'all'> or an array of names).  On failure, the relations
and their pages that hold one are listed.

=cut

sub pages_have_no
{
	my ($node, $db, $rels, @strings) = @_;
	my $hits = page_hits($node, $db, $rels, @strings);
	my $ok = is($hits, '',
		'no page of ' . (ref $rels ? join(', ', @$rels) : 'the targets and the anonymize schema')
		  . ' on node ' . $node->name . ' holds any of ' . scalar(@strings)
		  . " strings ($strings[0], ...)");
	return $ok;
}

=pod

=back

=cut

1;
