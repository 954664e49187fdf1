# The server killed at distinct points of a run, each reached
# deterministically by a lock another session holds, which the run blocks
# on at that point (pg_stat_activity shows where it waits):
#
#   scan      the second target's table is locked ACCESS EXCLUSIVE: the
#             run waits in the middle of its scan (first target scanned)
#   hold      Held request's page row locked: the run waits inside the
#             transaction that records the Held decision (postmaster killed)
#   held      a row of another request locked: the Held decision is
#             committed, the run waits in the middle of its rewrite
#   batches   the confirmed request's run waits on one of its rows half-way
#             (earlier batches committed) (postmaster killed)
#   finish    a page row locked once the rewrite is over: the run waits in
#             the transaction that finishes the requests
#   vacuum    an archive table locked SHARE UPDATE EXCLUSIVE: the requests
#             are Done, the last run waits in its vacuum; the run after the
#             crash has nothing to do but must vacuum what it rewrote
#
# The scenario is: run (A and B Done, H Held), confirm(H), run (H Done).
# After each kill the server restarts (crash restart for the run's
# process, a new start for the postmaster), the interrupted step is done
# again and the scenario goes on.  The archive tables, the page (statuses,
# rows_anonymized, masked identifiers), the receipts and request_private
# must then equal, whole tables compared, those of the same scenario run
# without interruption in another database; and no tuple of the archive,
# live or dead, keeps an identifier but the live rows that are not due.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use AnonymizeTest;

my $node = new_node('crash_points', settings => q{
shared_preload_libraries = ''
anonymize.batch_size = 500
anonymize.max_rows_per_request = 3000
restart_after_crash = on
log_statement = none
});

# A: phone, 1500 rows of calls and 1000 of chats (2500: under the limit)
# B: email, 2000 rows of chats
# H: phone, 3000 rows of calls and 500 of chats (3500: Held)
# Rows after 2024-06-30 are not due.
$node->safe_psql('postgres', 'CREATE DATABASE tmpl');
$node->safe_psql('tmpl', q{
CREATE EXTENSION anonymize;
CREATE EXTENSION pageinspect;
CREATE TABLE calls (id int PRIMARY KEY, caller text, at timestamptz NOT NULL);
INSERT INTO calls
SELECT g, CASE WHEN g % 40 = 0 THEN (ARRAY['91234567', '+47 912 34 567', '0047-91234567'])[g % 3 + 1]
               WHEN g % 20 = 1 THEN (ARRAY['93333333', '933 33 333'])[g % 2 + 1]
               ELSE (90000000 + g)::text END,
       CASE WHEN g % 7 = 0 THEN timestamptz '2025-01-01' ELSE '2024-01-01' END
FROM generate_series(1, 70000) g;
CREATE TABLE chats (id int PRIMARY KEY, chatter text, at timestamptz NOT NULL);
INSERT INTO chats
SELECT g, CASE WHEN g % 10 = 0 THEN (ARRAY['ola@example.com', 'Ola@Example.COM'])[g % 2 + 1]
               WHEN g % 20 = 1 THEN '+4791234567'
               WHEN g % 40 = 3 THEN '93333333'
               ELSE 'person' || g || '@example.org' END,
       CASE WHEN g % 7 = 0 THEN timestamptz '2025-01-01' ELSE '2024-01-01' END
FROM generate_series(1, 23333) g;
SELECT anonymize.add_target('calls', 'caller', 'phone', 'archive', 'at');
SELECT anonymize.add_target('chats', 'chatter', 'phone_or_email', 'archive', 'at');
INSERT INTO anonymize.anonymize_request (phone, email, to_date, comment) VALUES
	('91234567', NULL, '2024-06-30', 'A'),
	(NULL, 'ola@example.com', '2024-06-30', 'B'),
	('93333333', NULL, '2024-06-30', 'H');
});

my @steps = ('run', 'confirm', 'run');
my $ndb = 0;

sub new_db
{
	my $db = 'case' . $ndb++;
	# FILE_COPY: with WAL_LOG (the default), a crash restart gives the
	# copied identity sequences of the receipts values already used
	# (their page comes with log_cnt > 0 and a fresh LSN, so their next
	# values are not WAL-logged)
	$node->safe_psql('postgres', "CREATE DATABASE $db TEMPLATE tmpl STRATEGY FILE_COPY");
	return $db;
}

sub run_gone
{
	my ($db) = @_;
	$node->poll_query_until('postgres', qq{
		SELECT count(*) = 0 FROM pg_stat_activity
		WHERE backend_type = 'anonymize run()' AND datname = '$db'})
	  or die 'the run worker did not exit';
}

sub do_step
{
	my ($db, $step) = @_;
	if ($step eq 'run')
	{
		$node->safe_psql($db, 'SELECT anonymize.run()');
		run_gone($db);			# it vacuums after run() returned
	}
	else
	{
		$node->safe_psql($db, q{
			SELECT anonymize.confirm(id) FROM anonymize.anonymize_request
			WHERE comment = 'H'});
	}
}

# what must be equal, as text
sub state
{
	my ($db) = @_;
	my %s;
	for my $t (['calls', 'caller'], ['chats', 'chatter'])
	{
		my ($tbl, $col) = @$t;
		$s{$tbl} = $node->safe_psql($db, qq{
			SELECT count(*) || ' rows, ' ||
			       count(*) FILTER (WHERE $col = 'Anonymized') || ' Anonymized, md5 ' ||
			       md5(string_agg(c::text, E'\\n' ORDER BY c.id))
			FROM $tbl c});
	}
	$s{page} = $node->safe_psql($db, q{
		SELECT id, phone, email, to_date, comment, archive, sms_survey, raw_data,
		       status, rows_anonymized, error, done_at IS NOT NULL AS done
		FROM anonymize.anonymize_request ORDER BY id});
	$s{receipts} = $node->safe_psql($db, q{
		SELECT request_id, event, status, target, col, rows, detail
		FROM anonymize.request_log
		ORDER BY request_id, event, status, target, col, rows, detail});
	$s{private} = $node->safe_psql($db, q{
		SELECT request_id, phone_digest IS NOT NULL, email_digest IS NOT NULL,
		       confirmed_at IS NOT NULL, confirmed_by
		FROM anonymize.request_private ORDER BY request_id});
	return \%s;
}

# tuples, live or dead, of the archive that keep an identifier, and live
# rows that do (the rows not due): equal once the run has vacuumed
my $ids = q{'91234567|912 34 567|93333333|933 33 333|ola@example\.com'};

sub leftovers
{
	my ($db) = @_;
	return $node->safe_psql($db, qq{
		SELECT count(*)
		FROM (VALUES ('calls'), ('chats')) AS r(rel),
		     generate_series(0, pg_relation_size(r.rel) / 8192 - 1) AS b,
		     LATERAL heap_page_items(get_raw_page(r.rel, b::int)) AS i
		WHERE i.t_data IS NOT NULL
		  AND lower(encode(i.t_data, 'escape')) ~ $ids})
	  . ' tuples, '
	  . $node->safe_psql($db, qq{
		SELECT (SELECT count(*) FROM calls WHERE lower(caller) ~ $ids) +
		       (SELECT count(*) FROM chats WHERE lower(chatter) ~ $ids)})
	  . ' live';
}

# The uninterrupted reference.
my $ref = new_db();
do_step($ref, $_) for @steps;
my $ref_left = leftovers($ref);
my $expected = state($ref);
is( $node->safe_psql($ref, q{
	SELECT string_agg(comment || ' ' || status || ' ' || rows_anonymized, ', ' ORDER BY id)
	FROM anonymize.anonymize_request}),
	'A Done 2500, B Done 2000, H Done 3501',
	'reference: the uninterrupted scenario erases every due row');
like($expected->{receipts}, qr/Held\|\|\|\|would rewrite 3501 rows, more than anonymize.max_rows_per_request \(3000\)/, 'reference: H was Held first');

# Start the run of step $at in the background once the steps before it
# are done, after $prepare (given the db, returns locker sessions) took
# its locks; wait until the run waits on a lock with its activity like
# $activity.
sub start_case
{
	my ($db, $at, $prepare, $activity) = @_;
	do_step($db, $steps[$_]) for 0 .. $at - 1;
	my @lockers = $prepare->($db);
	my $runner = $node->background_psql($db);
	$runner->query_until(qr/started/, "\\echo started\nSELECT anonymize.run();\n");
	wait_for_run($db, $activity);
	return ($runner, @lockers);
}

sub wait_for_run
{
	my ($db, $activity) = @_;
	# the run's process, or one of its rewrite workers (batches are
	# shared among them: anonymize.max_parallel_workers = 2)
	$node->poll_query_until('postgres', qq{
		SELECT count(*) = 1 FROM pg_stat_activity
		WHERE backend_type IN ('anonymize run()', 'anonymize parallel rewrite')
		  AND datname = '$db' AND wait_event_type = 'Lock' AND query ~ '$activity'})
	  or die "the run never waited at $activity";
}

sub locker
{
	my ($db, @sql) = @_;
	my $s = $node->background_psql($db);
	$s->query_safe($_) for @sql;
	return $s;
}

sub q1
{
	my ($db, $sql) = @_;
	return $node->safe_psql($db, $sql);
}

# kill, let the server come back, redo step $at and go on, compare
sub crash_and_finish
{
	my ($db, $at, $what, $name, @sessions) = @_;
	if ($what eq 'postmaster')
	{
		my @children = ($node->{_pid}, split /\s+/, `ps --ppid $node->{_pid} -o pid=`);
		$node->kill9;
		eval { $_->quit; } for @sessions;
		# the children exit when they see the postmaster gone; a new
		# postmaster would not start while they hold the shared memory,
		# nor while the old one's pid still exists (until it is reaped)
		for (1 .. 300)
		{
			last unless grep { $_ && kill(0, $_) } @children;
			note "waiting for @children";
			sleep 0.1;
		}
		my $started = 0;
		for (1 .. 60)
		{
			$node->{_pid} = undef;	# start() read the dead one's pid file
			last if ($started = $node->start(fail_ok => 1));
			sleep 0.5;
		}
		die 'the server did not start again' unless $started;
	}
	else
	{
		my $pid = q1('postgres', qq{
			SELECT pid FROM pg_stat_activity
			WHERE backend_type = 'anonymize run()' AND datname = '$db'});
		kill 'KILL', $pid;
		eval { $_->quit; } for @sessions;
		$node->poll_query_until('postgres', 'SELECT true')
		  or die 'the server did not come back';
	}
	do_step($db, $steps[$_]) for $at .. $#steps;
	# first, before reading the tables prunes pages
	my $left = leftovers($db);
	my $got = state($db);
	for my $k (sort keys %$expected)
	{
		is($got->{$k}, $expected->{$k}, "$name: $k equal to the uninterrupted run");
	}
	is($left, $ref_left, "$name: no dead tuple keeps an identifier");
	is( q1($db, q{SELECT count(*) FILTER (WHERE outcome NOT IN ('ok', 'interrupted')) || ' ' ||
		                 count(*) FILTER (WHERE vacuumed_at IS NULL) FROM anonymize.runs}),
		'0 0', "$name: every run ok or interrupted, and vacuumed after");
}

my ($db, @s);

# 1. During the scan: chats (scanned second) locked.
$db = new_db();
@s = start_case($db, 0,
	sub { locker($_[0], 'BEGIN', 'LOCK TABLE chats IN ACCESS EXCLUSIVE MODE') },
	'scanning public\.calls');
is( q1($db, q{SELECT string_agg(status::text, ',' ORDER BY id) || ' ' ||
	(SELECT count(*) FROM calls WHERE caller = 'Anonymized') FROM anonymize.anonymize_request}),
	'Running,Running,Running 0', 'scan: killed with the requests marked, nothing rewritten');
crash_and_finish($db, 0, 'run', 'scan', @s);

# 2. During the Held decision: once the run is marked and scanning, H's
# page row is locked and the scan let go (postmaster killed).
$db = new_db();
@s = start_case($db, 0,
	sub { locker($_[0], 'BEGIN', 'LOCK TABLE chats IN ACCESS EXCLUSIVE MODE') },
	'scanning public\.calls');
push @s, locker($db, 'BEGIN', q{SELECT 1 FROM anonymize.anonymize_request WHERE comment = 'H' FOR UPDATE});
$s[1]->query_safe('COMMIT');
wait_for_run($db, 'scanning public\.chats');
is( q1($db, q{SELECT string_agg(status::text, ',' ORDER BY id) || ' ' ||
	(SELECT count(*) FROM calls WHERE caller = 'Anonymized') FROM anonymize.anonymize_request}),
	'Running,Running,Running 0', 'hold: killed while the Held decision is not committed');
crash_and_finish($db, 0, 'postmaster', 'hold', @s);

# 3. Right after the Held decision: an A row half-way through calls locked.
$db = new_db();
@s = start_case($db, 0,
	sub { locker($_[0], 'BEGIN', 'SELECT 1 FROM calls WHERE id = 36000 FOR UPDATE') },
	'rewriting public\.calls');
my ($st, $n) = split /\|/, q1($db, q{SELECT string_agg(status::text, ',' ORDER BY id),
	(SELECT count(*) FROM calls WHERE caller = 'Anonymized') FROM anonymize.anonymize_request});
is($st, 'Running,Running,Held', 'held: killed with H Held and A, B Running');
ok($n > 0 && $n < 1500, "held: killed in the middle of A's rows ($n of 1500)");
crash_and_finish($db, 0, 'run', 'held', @s);

# 4. Between batches of the confirmed request (postmaster killed).
$db = new_db();
@s = start_case($db, 2,
	sub { locker($_[0], 'BEGIN', 'SELECT 1 FROM calls WHERE id = 40001 FOR UPDATE') },
	'rewriting public\.calls');
# (H's rows rewritten: those of both tables less A's 2,500 and B's 2,000;
# with the batches shared, a process may rewrite H's chats while another
# waits on calls)
($st, $n) = split /\|/, q1($db, q{SELECT string_agg(status::text, ',' ORDER BY id),
	(SELECT count(*) FROM calls WHERE caller = 'Anonymized')
	+ (SELECT count(*) FROM chats WHERE chatter = 'Anonymized') - 4500 FROM anonymize.anonymize_request});
is($st, 'Done,Done,Running', 'batches: killed with the confirmed H Running');
ok($n > 0 && $n < 3500, "batches: killed in the middle of H's rows ($n of 3500)");
is( q1($db, q{SELECT sum(rows) FROM anonymize.request_log l JOIN anonymize.anonymize_request r
	ON r.id = l.request_id WHERE r.comment = 'H' AND l.event = 'rewrite'}),
	$n, 'batches: H\'s receipts equal its rows rewritten so far');
crash_and_finish($db, 2, 'postmaster', 'batches', @s);

# 5. While finishing: the last matching row of chats locked; once the run
# waits on it, B's page row is locked and the row released.
$db = new_db();
@s = start_case($db, 0,
	sub { locker($_[0], 'BEGIN', 'SELECT 1 FROM chats WHERE id = 23330 FOR UPDATE') },
	'rewriting public\.chats');
push @s, locker($db, 'BEGIN', q{SELECT 1 FROM anonymize.anonymize_request WHERE comment = 'B' FOR UPDATE});
$s[1]->query_safe('COMMIT');
wait_for_run($db, 'finishing requests');
is( q1($db, q{SELECT string_agg(status::text, ',' ORDER BY id) || ' ' ||
	(SELECT count(*) FROM calls WHERE caller = 'Anonymized') || ' ' ||
	(SELECT count(*) FROM chats WHERE chatter = 'Anonymized') FROM anonymize.anonymize_request}),
	'Running,Running,Held 1500 3000', 'finish: killed with every row rewritten, nothing Done');
crash_and_finish($db, 0, 'run', 'finish', @s);

# 6. During the vacuum of the last run: calls locked SHARE UPDATE
# EXCLUSIVE.  The run after the crash has no request to do: it must still
# vacuum what the killed run rewrote.
$db = new_db();
@s = start_case($db, 2,
	sub { locker($_[0], 'BEGIN', 'LOCK TABLE calls IN SHARE UPDATE EXCLUSIVE MODE') },
	'vacuuming');
is( q1($db, q{SELECT string_agg(status::text, ',' ORDER BY id) || ' ' ||
	(SELECT string_agg(outcome || ' ' || (vacuumed_at IS NULL), ',' ORDER BY id) FROM anonymize.runs)
	FROM anonymize.anonymize_request}),
	'Done,Done,Done ok false,ok true', 'vacuum: killed with the requests Done, the run ok, not vacuumed');
crash_and_finish($db, 2, 'run', 'vacuum', @s);

log_has_no($node, '91234567', '912 34 567', '93333333', '933 33 333', 'ola@example.com');

$node->stop;
done_testing();
