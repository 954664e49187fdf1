# Not a byte of an identifier left in the pages, on the primary and on a
# streaming standby: after a run (and a CHECKPOINT), every page of every
# target table, its indexes, its TOAST table and every relation of the
# anonymize schema is read with pageinspect's get_raw_page() and searched
# for each identifier in each format it was stored in: no hit, in a tuple,
# a dead line pointer's old storage or free space.  The same after a run
# killed while it waited in its vacuum, and after one killed between
# rewrite batches, and after one killed while finishing: the next run
# scrubs what the killed one left; and after a run whose vacuum a
# transaction older than it held back, once that transaction has ended.
#
# Also the other places the bytes could go: pg_stat_statements (the portal's
# documented calls with bind parameters, and pg_anonymize add), the server
# log at log_min_messages = debug5 during a run, temporary files, and
# pg_stat_activity while pg_anonymize add waits.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use FindBin;
use lib $FindBin::RealBin;
use AnonymizeTest;

my $primary = new_node('page_bytes', allows_streaming => 1, settings => q{
shared_preload_libraries = 'anonymize, pg_stat_statements'
pg_stat_statements.track = all
anonymize.batch_size = 4
restart_after_crash = on
log_temp_files = 0
log_parameter_max_length = 0
});

# Bob (filed by the portal's calls), Eve (filed by pg_anonymize add), a
# request filed and cancelled, and C and D for the crash cases.  calls:
# 156 rows a page, so rows 156 + 3120 k are the last (lowest) tuple of a
# full page, whose old version then leaves its bytes in the hole.
my $long = q{(SELECT string_agg(md5(g::text), ' ') FROM generate_series(1, 6) g)};
$primary->safe_psql('postgres', qq{
CREATE EXTENSION anonymize;
CREATE EXTENSION pageinspect;
CREATE EXTENSION pg_stat_statements;
CREATE TABLE calls (id int PRIMARY KEY, caller text, at timestamptz NOT NULL);
CREATE INDEX calls_caller_idx ON calls (caller);
INSERT INTO calls
SELECT g, CASE WHEN g % 3120 = 156 THEN '+4798765432'
               WHEN g % 3120 = 1716 THEN '98765432'
               WHEN g % 2999 = 7 THEN '004798765432'
               WHEN g % 2999 = 1500 THEN '+47 987 65 432'
               WHEN g % 2999 = 300 THEN '41234567'
               WHEN g % 2999 = 2100 THEN '47111111'
               WHEN g % 2999 = 2500 THEN '46666666'
               WHEN g % 1499 = 200 THEN '+47 47 22 22 22'
               ELSE '+47' || (10000000 + (g * 7919) % 89999999)::text END,
       '2024-01-01'::timestamptz + g * interval '1 min'
FROM generate_series(1, 30000) g;
CREATE TABLE chats (id int PRIMARY KEY, visitor text, at timestamptz NOT NULL);
CREATE INDEX chats_lower_idx ON chats (lower(visitor));
CREATE INDEX chats_hash_idx ON chats USING hash (visitor);
INSERT INTO chats
SELECT g, CASE WHEN g % 499 = 3 THEN (ARRAY['bob.test\@mytest.no', 'Bob.Test\@MyTest.no',
                                            '"Bob Test, Customer Services" <Bob.Test\@MyTest.no>'])[g % 3 + 1]
               WHEN g % 499 = 250 THEN 'Eve.Test\@MyTest.no'
               WHEN g % 499 = 400 THEN 'dora\@mytest.no'
               WHEN g % 499 = 100 THEN 'Erin <erin\@mytest.no>'
               ELSE 'visitor' || (g * 7919) % 100000 || '\@example.org' END,
       '2024-01-01'::timestamptz + g * interval '1 min'
FROM generate_series(1, 5000) g;
-- a display name long enough to be stored out of line, uncompressed (an
-- address is at most 254 bytes: toast_tuple_target moves this one out
-- once the body has gone)
CREATE TABLE mails (id int PRIMARY KEY, sender text, body text, at timestamptz NOT NULL)
	WITH (toast_tuple_target = 128);
ALTER TABLE mails ALTER sender SET STORAGE EXTERNAL, ALTER body SET STORAGE EXTERNAL;
INSERT INTO mails
SELECT g, CASE WHEN g % 50 = 10 THEN '"' || $long || '" <Bob.Test\@MyTest.no>'
               ELSE 'mailer' || g || '\@example.org' END,
       repeat('body ', 600), '2024-01-01'::timestamptz + g * interval '1 min'
FROM generate_series(1, 200) g;
SELECT anonymize.add_target('calls', 'caller', 'phone', 'archive', 'at');
SELECT anonymize.add_target('chats', 'visitor', 'phone_or_email', 'archive', 'at');
SELECT anonymize.add_target('mails', 'sender', 'email', 'archive', 'at');
});
my $long_part = $primary->safe_psql('postgres', 'SELECT md5(3::text)');
is( $primary->safe_psql('postgres', q{
		SELECT count(*) FROM mails, heap_page_items(get_raw_page('mails', (ctid::text::point)[0]::int)) i
		WHERE sender ~ 'Bob' AND i.t_ctid = mails.ctid AND i.lp_len < 100}),
	'4', 'the long display names are stored out of line');

# every format each identifier is stored in (the others contain these)
my @bob = ('98765432', '987 65 432', 'bob.test@mytest.no', 'Bob.Test@MyTest.no', $long_part);
my @eve = ('41234567', 'eve.test@mytest.no', 'Eve.Test@MyTest.no');
my @cancelled = ('45555555');
my @c = ('47111111');
my @d = ('47 22 22 22', '47222222', 'dora@mytest.no');
my @e = ('erin@mytest.no');
my @f = ('46666666');

# page_hits() and pages_have_no() (t/AnonymizeTest.pm) read every page of
# every relation of the anonymize schema and of the targets, their
# indexes, TOAST tables and TOAST indexes, on a primary or a standby.
sub hits { return page_hits($_[0], 'postgres', 'all', @_[1 .. $#_]); }
sub none { return pages_have_no($_[0], 'postgres', 'all', @_[1 .. $#_]); }

like(hits($primary, @bob),
	qr/^calls:\d+,calls_caller_idx:\d+,chats:\d+,chats_lower_idx:\d+,pg_toast.pg_toast_\d+:\d+$/,
	'before: the search finds the identifiers in the tables, their indexes and TOAST');

$primary->backup('backup');
my $standby = PostgreSQL::Test::Cluster->new('page_bytes_standby');
$standby->init_from_backup($primary, 'backup', has_streaming => 1);
$standby->start;

# --- the portal's documented calls, identifiers as bind parameters
$primary->safe_psql('postgres', 'SELECT pg_stat_statements_reset()');
my $script = $primary->basedir . '/portal.sql';
PostgreSQL::Test::Utils::append_to_file($script, q{
INSERT INTO anonymize.anonymize_request (phone, email, to_date, comment) VALUES (:phone, :email, '2024-06-30', 'Bob');
SELECT anonymize.is_anonymized(:phone);
SELECT anonymize.is_anonymized(:email);
UPDATE anonymize.anonymize_request SET email = :email WHERE comment = 'Bob' AND status = 'Waiting';
INSERT INTO anonymize.anonymize_request (phone, to_date, comment) VALUES (:cancelled, '2024-06-30', 'cancelled');
DELETE FROM anonymize.anonymize_request WHERE comment = 'cancelled';
});
$primary->command_ok(['pgbench', '-n', '-t', '1', '-M', 'extended', '-f', $script,
		'-D', 'phone=+47 987 65 432', '-D', 'email=Bob.Test@MyTest.no',
		'-D', 'cancelled=45555555', 'postgres'],
	'the portal files, checks, edits and cancels with bind parameters');

# --- pg_anonymize add, seen in pg_stat_activity while it waits for a lock
my $lock = $primary->background_psql('postgres');
$lock->query_safe('BEGIN');
$lock->query_safe('LOCK anonymize.anonymize_request IN EXCLUSIVE MODE');
my ($out, $err) = ('', '');
my $h = IPC::Run::start([ $cli, '-h', $primary->host, '-p', $primary->port, '-d', 'postgres',
		'add', '--phone=41234567', '--email=Eve.Test@MyTest.no', '--to-date=2024-06-30' ],
	'<', \undef, '>', \$out, '2>', \$err);
$primary->poll_query_until('postgres', q{
	SELECT count(*) = 1 FROM pg_stat_activity
	WHERE wait_event_type = 'Lock' AND query ~ 'anonymize_request'})
  or die 'pg_anonymize add never waited';
is( $primary->safe_psql('postgres', q{
		SELECT count(*) FROM pg_stat_activity
		WHERE wait_event_type = 'Lock' AND query ~ 'INSERT'
		  AND query !~* '41234567|eve\.test'}),
	'1', 'pg_stat_activity shows the waiting add without its identifiers');
$lock->query_safe('COMMIT');
$h->finish;
is($h->result(0), 0, 'pg_anonymize add filed Eve');

# --- the run, at log_min_messages = debug5
my $log_start = -s $primary->logfile;
$primary->safe_psql('postgres', q{
	ALTER SYSTEM SET log_min_messages = debug5;
	SELECT pg_reload_conf()});

sub run_and_wait
{
	my ($node) = @_;
	my $done = $node->safe_psql('postgres', 'SELECT anonymize.run()');
	$node->poll_query_until('postgres', q{
		SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'anonymize run()'})
	  or die 'the run worker did not exit';
	return $done;
}

sub settle
{
	$primary->safe_psql('postgres', 'CHECKPOINT');
	$primary->wait_for_catchup($standby, 'replay', $primary->lsn('insert'));
}

is(run_and_wait($primary), '2', 'the run finishes Bob and Eve');
$primary->safe_psql('postgres', q{
	ALTER SYSTEM RESET log_min_messages;
	SELECT pg_reload_conf()});
settle();
is($primary->safe_psql('postgres', q{SELECT count(*) FROM mails WHERE sender = 'Anonymized'}),
	'4', 'the out-of-line display names were rewritten');
my $run_log = substr(slurp_file($primary->logfile), $log_start);
ok($run_log =~ /DEBUG:  /, 'the log of the run is at debug level');
ok($run_log =~ /anonymize run \d+: scrubbed [1-9]\d* of \d+ pages read/, 'the run scrubbed pages');
ok($run_log =~ /anonymize run \d+: vacuuming 5 tables, 1 of them without the index pass/,
	'the vacuum skips the index pass of mails, whose only index (the key) holds no identifier');
ok($run_log !~ /rebuil/, 'no erased key is a separator here: the run rebuilt no index');

none($primary, @bob, @eve, @cancelled);
none($standby, @bob, @eve, @cancelled);
isnt(hits($primary, @c, @d), '', 'the rows of C and D, not requested, are still there');

ok($run_log !~ /98765432|987 65 432|41234567|45555555|bob\.test|eve\.test/i,
	'the server log at debug5 during the run names no identifier');
ok($run_log !~ /temporary file/, 'the run wrote no temporary file');
is( $primary->safe_psql('postgres', q{
		SELECT count(*) FROM pg_stat_statements
		WHERE query ~* '98765432|987 65 432|41234567|45555555|bob\.test|eve\.test'}),
	'0', 'pg_stat_statements holds no identifier');
ok( $primary->safe_psql('postgres', q{
		SELECT count(*) FROM pg_stat_statements
		WHERE query ~ 'INSERT INTO anonymize.anonymize_request'}) >= 3,
	'pg_stat_statements has the portal\'s and pg_anonymize\'s INSERTs');

# --- a transaction older than the run still sees the old versions: they
# are not reported as scrubbed, and the next run does it again
my $old = $primary->background_psql('postgres');
$old->query_safe('BEGIN ISOLATION LEVEL REPEATABLE READ');
$old->query_safe('SELECT count(*) FROM calls');
$primary->safe_psql('postgres', q{
	INSERT INTO anonymize.anonymize_request (phone, to_date, comment) VALUES ('46666666', '2024-06-30', 'F')});
$log_start = -s $primary->logfile;
is(run_and_wait($primary), '1', 'snapshot: the run finishes F');
settle();
ok(substr(slurp_file($primary->logfile), $log_start) =~
	  /anonymize run \d+: \d+ old row versions are still in their pages: a transaction older than the run can still see them/,
	'snapshot: the run says that old versions are still there');
is($primary->safe_psql('postgres', 'SELECT count(*) FROM anonymize.run_log WHERE vacuumed_at IS NULL'),
	'1', 'snapshot: and does not record its vacuum');
isnt(hits($primary, @f), '', 'snapshot: F\'s old versions are indeed still in their pages');
$old->quit;
is(run_and_wait($primary), '0', 'snapshot: the next run has no request to finish');
settle();
is($primary->safe_psql('postgres', 'SELECT count(*) FROM anonymize.run_log WHERE vacuumed_at IS NULL'),
	'0', 'snapshot: it vacuums and records it');
none($primary, @f);
none($standby, @f);

# --- a run killed while it waits in its vacuum: the next one scrubs
sub kill_run
{
	my $pid = $primary->safe_psql('postgres', q{
		SELECT pid FROM pg_stat_activity WHERE backend_type = 'anonymize run()'});
	kill 'KILL', $pid;
	$primary->poll_query_until('postgres', q{
		SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'anonymize run()'})
	  or die 'the server did not come back';
}

sub wait_run_at
{
	my ($activity) = @_;
	$primary->poll_query_until('postgres', qq{
		SELECT count(*) = 1 FROM pg_stat_activity
		WHERE backend_type = 'anonymize run()' AND wait_event_type = 'Lock'
		  AND query ~ '$activity'})
	  or die "the run never waited at $activity";
}

$primary->safe_psql('postgres', q{
	INSERT INTO anonymize.anonymize_request (phone, to_date, comment) VALUES ('47111111', '2024-06-30', 'C')});
$lock->query_safe('BEGIN');
$lock->query_safe('LOCK calls IN SHARE UPDATE EXCLUSIVE MODE');
$primary->safe_psql('postgres', 'SELECT anonymize.run()');
wait_run_at('vacuuming');
kill_run();
eval { $lock->quit; };
is( $primary->safe_psql('postgres', q{
		SELECT status || ' ' || (SELECT count(*) FROM anonymize.run_log WHERE vacuumed_at IS NULL)
		FROM anonymize.anonymize_request WHERE comment = 'C'}),
	'Done 1', 'vacuum: killed with C Done, its run not vacuumed');
is(run_and_wait($primary), '0', 'vacuum: the next run has no request to finish');
settle();
none($primary, @c);
none($standby, @c);

# --- a run killed between rewrite batches: a D row locked
$primary->safe_psql('postgres', q{
	INSERT INTO anonymize.anonymize_request (phone, email, to_date, comment)
	VALUES ('47222222', 'dora@mytest.no', '2024-06-30', 'D')});
$lock = $primary->background_psql('postgres');
$lock->query_safe('BEGIN');
$lock->query_safe(q{SELECT 1 FROM calls WHERE id = (SELECT max(id) FROM calls WHERE caller = '+47 47 22 22 22') FOR UPDATE});
my $runner = $primary->background_psql('postgres');
$runner->query_until(qr/started/, "\\echo started\nSELECT anonymize.run();\n");
wait_run_at('rewriting public\.calls');
my $d_left = $primary->safe_psql('postgres', q{SELECT count(*) FROM calls WHERE caller = '+47 47 22 22 22'});
ok($d_left > 0 && $d_left < 20, "batches: killed with some of D's 20 rows rewritten ($d_left left)");
kill_run();
eval { $runner->quit; };
eval { $lock->quit; };
is(run_and_wait($primary), '1', 'batches: the next run finishes D');
settle();
none($primary, @d);
none($standby, @d);
none($primary, @bob, @eve, @cancelled, @c);

# --- a run killed while finishing: E's last chat locked until the rewrite
# waits on it, then E's page row locked and the chat released
$primary->safe_psql('postgres', q{
	INSERT INTO anonymize.anonymize_request (email, to_date, comment) VALUES ('erin@mytest.no', '2024-06-30', 'E')});
my $lock1 = $primary->background_psql('postgres');
$lock1->query_safe('BEGIN');
$lock1->query_safe(q{SELECT 1 FROM chats WHERE id = (SELECT max(id) FROM chats WHERE visitor ~ 'erin') FOR UPDATE});
$runner = $primary->background_psql('postgres');
$runner->query_until(qr/started/, "\\echo started\nSELECT anonymize.run();\n");
wait_run_at('rewriting public\.chats');
my $lock2 = $primary->background_psql('postgres');
$lock2->query_safe('BEGIN');
$lock2->query_safe(q{SELECT 1 FROM anonymize.anonymize_request WHERE comment = 'E' FOR UPDATE});
$lock1->query_safe('COMMIT');
wait_run_at('finishing requests');
kill_run();
eval { $_->quit; } for ($runner, $lock1, $lock2);
is( $primary->safe_psql('postgres', q{SELECT status FROM anonymize.anonymize_request WHERE comment = 'E'}),
	'Running', 'finish: killed with E Running, its rows rewritten');
is(run_and_wait($primary), '1', 'finish: the next run finishes E');
settle();
none($primary, @e);
none($standby, @e);

# --- live keys: a btree separator (an internal page's pivot, a leaf's high
# key) is a copy of a key, kept when its rows go; a GIN entry key and a BRIN
# range's bounds too.  The run rebuilds such indexes (REINDEX INDEX
# CONCURRENTLY): a btree when a separator on the way to an erased key is
# one, the other methods when it rewrote rows of their table.
$primary->safe_psql('postgres', q{
	CREATE EXTENSION btree_gin;
	CREATE INDEX calls_caller_gin ON calls USING gin (caller);
	CREATE INDEX calls_caller_brin ON calls USING brin (caller) WITH (pages_per_range = 4)});

# the numbers (national digits) of separators of the root of calls_caller_idx
sub separators
{
	my $idx = shift // 'calls_caller_idx';
	return split /\n/, $primary->safe_psql('postgres', qq{
		WITH i AS (
			SELECT decode(replace(data, ' ', ''), 'hex') AS b
			FROM bt_page_items('$idx', (SELECT root FROM bt_metap('$idx')))
			WHERE data <> '')
		SELECT substr(v, 4) FROM (
			SELECT convert_from(substring(b FROM 2 FOR (get_byte(b, 0) >> 1) - 1), 'UTF8') AS v FROM i) k
		WHERE v ~ '^\\+47[0-9]{8}\$' ORDER BY v});
}
my @sep = separators();
ok(@sep >= 10, 'live keys: the root of calls_caller_idx has separators (' . scalar(@sep) . ')');
my ($p1, $p2) = @sep[ 3, 7 ];
my $relfile = sub {
	$primary->safe_psql('postgres', qq{SELECT pg_relation_filenode('$_[0]')});
};
my %before = map { $_ => $relfile->($_) }
  qw(calls_caller_idx calls_caller_gin calls_caller_brin chats_lower_idx);

# with anonymize.rebuild_indexes off, the separator is still there
$primary->safe_psql('postgres', qq{
	ALTER SYSTEM SET anonymize.rebuild_indexes = off;
	SELECT pg_reload_conf();
	INSERT INTO anonymize.anonymize_request (phone, to_date, comment) VALUES ('$p1', '2024-06-30', 'P1')});
$log_start = -s $primary->logfile;
is(run_and_wait($primary), '1', 'live keys, rebuild off: the run finishes P1');
settle();
like(hits($primary, $p1), qr/calls_caller_gin:\d+.*calls_caller_idx:\d+/,
	'live keys, rebuild off: the GIN entry and the btree separator still hold P1');
unlike(hits($primary, $p1), qr/^calls:|,calls:/, '... while no row of calls does');
ok(substr(slurp_file($primary->logfile), $log_start) =~
	  /anonymize run \d+: 3 indexes could keep an erased identifier as a live key; not rebuilt, anonymize.rebuild_indexes is off/,
	'... and the run says it left 3 indexes');

# on (the default): the next run rewrites the btree's separators that hold
# P2 in place (the table locked against writers for it) and rebuilds the
# GIN and BRIN indexes, and only them
$primary->safe_psql('postgres', qq{
	ALTER SYSTEM RESET anonymize.rebuild_indexes;
	SELECT pg_reload_conf();
	CREATE EXTENSION amcheck;
	INSERT INTO anonymize.anonymize_request (phone, to_date, comment) VALUES ('$p2', '2024-06-30', 'P2')});
like(hits($primary, $p2), qr/calls_caller_idx:[2-9]/, 'live keys: P2 is a separator and an entry');
$log_start = -s $primary->logfile;
is(run_and_wait($primary), '1', 'live keys: the run finishes P2');
settle();
my $log = substr(slurp_file($primary->logfile), $log_start);
for my $idx (qw(calls_caller_gin calls_caller_brin))
{
	ok($log =~ /anonymize run \d+: rebuilt index public\.$idx: it could keep an erased identifier as a live key/,
		"live keys: the run rebuilt $idx");
	isnt($relfile->($idx), $before{$idx}, "... which has a new file");
}
like($log, qr/anonymize run \d+: rewrote [1-9]\d* separators? of index public\.calls_caller_idx in place: (it|they) held an erased identifier\n/,
	'live keys: the run rewrote the btree separator that held P2 in place');
unlike($log, qr/rebuilt index public\.calls_caller_idx/, '... and did not rebuild the btree');
is($relfile->('calls_caller_idx'), $before{calls_caller_idx}, '... which keeps its file');
unlike(hits($primary, $p2), qr/calls_caller_idx/, '... and no longer holds P2');
like(hits($primary, $p1), qr/calls_caller_idx/,
	'... while P1, left by the run with rebuild_indexes off, is still a separator (not this run\'s key)');
is($primary->safe_psql('postgres', q{
		SELECT bt_index_parent_check('calls_caller_idx', true, true)}),
	'', 'live keys: amcheck finds the rewritten btree sound (every entry found again from the root)');
is($primary->safe_psql('postgres', q{
		SET enable_seqscan = off;
		SELECT count(*) FROM (
			SELECT DISTINCT caller FROM calls WHERE caller LIKE '+47%' ORDER BY 1 LIMIT 400) c
		WHERE (SELECT count(*) FROM calls i WHERE i.caller = c.caller) = 0}),
	'0', 'live keys: each of 400 numbers is found through the rewritten btree');
is($relfile->('chats_lower_idx'), $before{chats_lower_idx},
	'live keys: an index of a table the run did not rewrite is left alone');
is($primary->safe_psql('postgres', q{
		SELECT count(*) FROM pg_index WHERE NOT indisvalid OR NOT indisready}),
	'0', 'live keys: no invalid index is left');
is($primary->safe_psql('postgres', 'SELECT count(*) FROM anonymize.run_log WHERE vacuumed_at IS NULL'),
	'0', 'live keys: the run recorded its vacuum');
none($primary, $p2);
none($standby, $p2);
is($primary->safe_psql('postgres', q{
		SET enable_seqscan = off;
		SELECT count(*) FROM calls WHERE caller = '+4798765432' OR caller LIKE '+47%'}),
	$primary->safe_psql('postgres', q{
		SET enable_indexscan = off; SET enable_bitmapscan = off;
		SELECT count(*) FROM calls WHERE caller = '+4798765432' OR caller LIKE '+47%'}),
	'live keys: the rebuilt indexes answer as the table does');

# a rebuild that fails (here its wait for a writer's open transaction runs
# into lock_timeout) is logged with its reason, its invalid copy is dropped
# (at the latest before the next attempt) and the run does not record its
# vacuum: the next run rebuilds
my @sep2 = grep { $_ ne $p1 && $_ ne $p2 } separators();
my $p3 = $sep2[5];
$primary->safe_psql('postgres', qq{
	ALTER SYSTEM SET lock_timeout = '1s';
	SELECT pg_reload_conf();
	INSERT INTO anonymize.anonymize_request (phone, to_date, comment) VALUES ('$p3', '2024-06-30', 'P3')});
my $writer = $primary->background_psql('postgres');
$writer->query_safe('BEGIN');
$writer->query_safe('LOCK calls IN ROW EXCLUSIVE MODE');
$log_start = -s $primary->logfile;
is(run_and_wait($primary), '1', 'failed rebuild: the run finishes P3');
$log = substr(slurp_file($primary->logfile), $log_start);
ok($log =~ /anonymize run \d+: could not rebuild index public\.calls_caller_idx: canceling statement due to lock timeout/,
	'failed rebuild: the run says which index, and why');
is($primary->safe_psql('postgres', 'SELECT count(*) FROM anonymize.run_log WHERE vacuumed_at IS NULL'),
	'1', 'failed rebuild: the run does not record its vacuum');
$writer->query_safe('COMMIT');
$writer->quit;
$primary->safe_psql('postgres', 'ALTER SYSTEM RESET lock_timeout; SELECT pg_reload_conf()');
is(run_and_wait($primary), '0', 'failed rebuild: the next run has no request to finish');
settle();
is($primary->safe_psql('postgres', q{
		SELECT count(*) FROM pg_index WHERE NOT indisvalid OR NOT indisready}),
	'0', 'failed rebuild: no invalid copy is left');
is($primary->safe_psql('postgres', 'SELECT count(*) FROM anonymize.run_log WHERE vacuumed_at IS NULL'),
	'0', 'failed rebuild: the next run rebuilds and records its vacuum');
none($primary, $p1, $p2, $p3);
none($standby, $p1, $p2, $p3);

# a deeper btree (leaves filled to 10 %: three levels): a separator of the
# root is also the high key of a page on each level below it, all of which
# the run rewrites alike
$primary->safe_psql('postgres', q{
	CREATE INDEX calls_caller_deep ON calls (caller) WITH (fillfactor = 10)});
is($primary->safe_psql('postgres', q{SELECT level FROM bt_metap('calls_caller_deep')}),
	'2', 'deep btree: the index has three levels');
my @sep4 = grep { my $s = $_; !grep { $_ eq $s } ($p1, $p2, $p3) } separators('calls_caller_deep');
ok(@sep4 >= 2, 'deep btree: its root has separators (' . scalar(@sep4) . ')');
my $p4 = $sep4[1];
my $deep_before = $relfile->('calls_caller_deep');
$primary->safe_psql('postgres', qq{
	INSERT INTO anonymize.anonymize_request (phone, to_date, comment) VALUES ('$p4', '2024-06-30', 'P4')});
like(hits($primary, $p4), qr/calls_caller_deep:[3-9]/, 'deep btree: P4 is a separator on each level and an entry');
$log_start = -s $primary->logfile;
is(run_and_wait($primary), '1', 'deep btree: the run finishes P4');
settle();
$log = substr(slurp_file($primary->logfile), $log_start);
like($log, qr/anonymize run \d+: rewrote [1-9]\d* separators? of index public\.calls_caller_deep in place: (it|they) held an erased identifier\n/,
	'deep btree: the run rewrote its separators in place');
is($relfile->('calls_caller_deep'), $deep_before, '... without a rebuild');
is($primary->safe_psql('postgres', q{
		SELECT bt_index_parent_check('calls_caller_deep', true, true)}),
	'', 'deep btree: amcheck finds it sound (every high key equal to its parent\'s separator)');
none($primary, $p4);
none($standby, $p4);

# a separator whose key rows the run kept (past the request's to-date)
# still hold: their entries keep the number anyway, so the separator stays
# and the index is neither rewritten nor rebuilt for it
my @sep5 = grep { my $s = $_; !grep { $_ eq $s } ($p1, $p2, $p3, $p4) } separators();
my $p5 = $sep5[2];
my $idx_before = $relfile->('calls_caller_idx');
$primary->safe_psql('postgres', qq{
	INSERT INTO calls VALUES (900001, '+47$p5', '2025-01-01');
	INSERT INTO anonymize.anonymize_request (phone, to_date, comment) VALUES ('$p5', '2024-06-30', 'P5')});
$log_start = -s $primary->logfile;
is(run_and_wait($primary), '1', 'kept rows: the run finishes P5');
settle();
$log = substr(slurp_file($primary->logfile), $log_start);
like($log, qr/anonymize run \d+: 1 separator of index public\.calls_caller_idx repeats an erased key that rows the run kept still hold: it stays, as their entries do/,
	'kept rows: the run says the separator stays with the kept row');
unlike($log, qr/public\.calls_caller_idx (in place|: it could)/, '... and neither rewrote nor rebuilt the index');
is($relfile->('calls_caller_idx'), $idx_before, '... which keeps its file');
is($primary->safe_psql('postgres', qq{SELECT string_agg(id::text, ',') FROM calls WHERE caller = '+47$p5'}),
	'900001', 'kept rows: only the row past the to-date still holds P5');

$standby->stop;
$primary->stop;
done_testing();
