# Citus tables as targets: a coordinator and two workers on this machine
# (Citus 13.2.2, built by tools/citus.sh), with a hash-distributed table, a
# reference table, a schema-sharded table, a Citus local table and a
# partitioned distributed table as targets, and a single node holding the
# same data in plain tables.  The same requests on both: preview(), the
# Held guard, confirm(), the run's statuses, rows_anonymized and receipts
# are the same, and so is every row of every table afterwards; no page of
# any shard on any node keeps an identifier erased up to today
# (pageinspect).  A distribution column is refused as the identifier
# column; run() on a worker is refused; is_anonymized() answers on the
# coordinator, and GRANT on a Citus table goes through.  A worker
# stopped: no request becomes Done, the run fails and says why, and the
# next run once the worker is back finishes with exact receipts; the
# coordinator's run killed with SIGKILL in its rewrite (waiting on a row
# lock on a shard): nothing of it committed, and the next run finishes as
# one node does.  protect() on a hash-distributed, a reference and a
# schema-sharded table, then GRANT and REVOKE (no distributed deadlock;
# the guard's EXECUTE on every node): the portal's role sees through the
# coordinator, by number, by queue and by a full scan, what it sees on one
# node, with a request Waiting, cancelled, Done and Held.
#
# Without Citus in the PostgreSQL under test (no citus.control), the test
# says "skipped: Citus not available".
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use AnonymizeTest;

my $probe = PostgreSQL::Test::Cluster->new('citus_probe');
my ($sharedir) = $probe->config_data('--sharedir');
if (!-f "$sharedir/extension/citus.control")
{
	print "skipped: Citus not available\n";
	plan skip_all => 'skipped: Citus not available';
}

my $citus_conf = q{
shared_preload_libraries = 'citus,anonymize'
restart_after_crash = on
max_prepared_transactions = 20
max_connections = 60
citus.override_table_visibility = off
anonymize.max_rows_per_request = 500
# the statements of this test name identifiers; the run's must not
log_statement = none
};
my $coord = new_node('coord', settings => $citus_conf);
my @workers = map { new_node("worker$_", settings => $citus_conf) } (1, 2);
my $single = new_node('single', settings => q{
anonymize.max_rows_per_request = 500
log_statement = none
});

# ---------------------------------------------------------------------
# The cluster
# ---------------------------------------------------------------------
$_->safe_psql('postgres', 'CREATE EXTENSION citus') for ($coord, @workers);
$coord->safe_psql('postgres', sprintf(q{SELECT citus_set_coordinator_host('%s', %d)},
	$coord->host, $coord->port));
$coord->safe_psql('postgres', sprintf(q{SELECT citus_add_node('%s', %d)}, $_->host, $_->port))
  for @workers;
$coord->safe_psql('postgres', 'CREATE EXTENSION anonymize; CREATE EXTENSION pageinspect');
$single->safe_psql('postgres', 'CREATE EXTENSION anonymize');
for my $w (@workers)
{
	is($w->safe_psql('postgres',
		q{SELECT extversion FROM pg_extension WHERE extname = 'anonymize'}),
		'1.1', 'Citus installed anonymize on ' . $w->name . ' too');
}

# The same tables on both sides; on the cluster, one of each Citus kind.
my $tables = q{
CREATE TABLE calls (id bigint, caller text, queue text, started timestamptz);
CREATE INDEX calls_caller ON calls (caller);
CREATE TABLE chats (id bigint, chatter text, at date);
CREATE SCHEMA tenant;
CREATE TABLE tenant.mails (id bigint, sender text, at timestamp);
CREATE TABLE sms (id bigint, number text, at date);
CREATE TABLE events (id bigint, caller text, at timestamptz) PARTITION BY RANGE (at);
CREATE TABLE events_2023 PARTITION OF events FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE raw (id bigint, msisdn numeric, at date);
CREATE TABLE by_caller (id bigint, caller text, at date);
};
$single->safe_psql('postgres', $tables);
(my $ctables = $tables) =~ s/CREATE SCHEMA tenant;/SET citus.enable_schema_based_sharding = on; CREATE SCHEMA tenant;/;
$ctables =~ s/(CREATE TABLE tenant.mails [^;]*;)/$1 RESET citus.enable_schema_based_sharding;/;
$coord->safe_psql('postgres', $ctables . q{
SELECT create_distributed_table('calls', 'id');
SELECT create_reference_table('chats');
SELECT citus_add_local_table_to_metadata('sms');
SELECT create_distributed_table('events', 'id');
SELECT create_distributed_table('raw', 'id');
SELECT create_distributed_table('by_caller', 'caller');
});
is($coord->safe_psql('postgres', q{
	SELECT string_agg(table_name::text || ':' || citus_table_type, ',' ORDER BY table_name::text)
	FROM citus_tables}),
	'by_caller:distributed,calls:distributed,chats:reference,events:distributed,'
	  . 'events_2023:distributed,events_2024:distributed,raw:distributed,sms:local,tenant.mails:schema',
	'one table of each Citus kind');

# Rows: Bob's number in its formats and Bob's email, up to today (erased
# whole), Carl's number around his cut-off, a switchboard number that
# trips the Held guard, and others.
my $data = q{
INSERT INTO calls
SELECT g, CASE WHEN g % 40 = 0 THEN '98765432' WHEN g % 40 = 1 THEN '+47 987 65 432'
               WHEN g % 40 = 2 THEN '004798765432' WHEN g % 40 = 3 THEN 'tel:+4798765432'
               WHEN g % 40 = 4 THEN '41234567' WHEN g % 40 < 30 THEN '22225555'
               ELSE '+47' || (30000000 + g)::text END,
       'q' || g % 3, '2024-01-01 00:30+01'::timestamptz + g * interval '7 hours'
FROM generate_series(1, 1200) g;
INSERT INTO calls VALUES (5000, '41234567', 'q1', NULL);
INSERT INTO chats
SELECT g, CASE g % 8 WHEN 0 THEN 'Bob.Test@MyTest.no' WHEN 1 THEN '"Bob" <bob.test@mytest.no>'
                     ELSE 'user' || g || '@example.com' END,
       date '2024-01-01' + g
FROM generate_series(1, 200) g;
INSERT INTO tenant.mails
SELECT g, CASE WHEN g % 5 = 0 THEN ' bob.test@mytest.no ' ELSE 'x' || g || '@example.com' END,
       timestamp '2024-01-01' + g * interval '1 day'
FROM generate_series(1, 150) g;
INSERT INTO sms
SELECT g, CASE WHEN g % 3 = 0 THEN '98765432' WHEN g % 3 = 1 THEN '41234567' ELSE '99999999' END,
       date '2024-01-01' + g
FROM generate_series(1, 120) g;
INSERT INTO events
SELECT g, CASE WHEN g % 2 = 0 THEN '+4798765432' ELSE '+4741234567' END,
       timestamptz '2023-06-01' + g * interval '3 days'
FROM generate_series(1, 150) g;
INSERT INTO raw
SELECT g, CASE WHEN g % 2 = 0 THEN 4798765432 ELSE 4741234567 END, date '2024-01-01' + g
FROM generate_series(1, 80) g;
};
$_->safe_psql('postgres', $data) for ($coord, $single);

# ---------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------
my $targets = q{
SELECT anonymize.add_target('calls', 'caller', 'phone', 'archive', 'started');
SELECT anonymize.add_target('chats', 'chatter', 'email', 'archive', 'at');
SELECT anonymize.add_target('tenant.mails', 'sender', 'email', 'sms_survey', 'at');
SELECT anonymize.add_target('sms', 'number', 'phone', 'sms_survey', 'at');
SELECT anonymize.add_target('events', 'caller', 'phone_or_email', 'archive', 'at', 'replace', 'Erased');
SELECT anonymize.add_target('raw', 'msisdn', 'phone', 'raw_data', 'at', 'null');
};
$_->safe_psql('postgres', $targets) for ($coord, $single);
my ($rc, $out, $err) = $coord->psql('postgres', q{
	\set VERBOSITY verbose
	SELECT anonymize.add_target('by_caller', 'caller', 'phone', 'archive', 'at')});
like($err, qr/0A000: column "caller" is the distribution column of the Citus table "public.by_caller"/,
	'the distribution column is refused as the identifier column, with the reason');
like($err, qr/HINT:  Register another column/, '... and what to do instead');

# ---------------------------------------------------------------------
# Requests, preview, the Held guard, the run
# ---------------------------------------------------------------------
my $requests = q{
INSERT INTO anonymize.anonymize_request (phone, email, to_date, archive, sms_survey, raw_data)
VALUES ('98765432', 'bob.test@mytest.no', current_date, true, true, true),
       ('41234567', NULL, '2024-02-15', true, true, true),
       ('22225555', NULL, current_date, true, false, false);
};
$_->safe_psql('postgres', $requests) for ($coord, $single);

my $preview = q{
SELECT string_agg(format('%s %s %s %s: %s/%s', r.id, p.target, p.col, r.status, p.rows, p.undated), E'\n'
                  ORDER BY r.id, p.target::text)
FROM anonymize.anonymize_request r, anonymize.preview(r.id) p};
my $want_preview = $single->safe_psql('postgres', $preview);
like($want_preview, qr/^1 calls caller Waiting: 120\/0$/m, 'the single node previews Bob\'s calls');
is($coord->safe_psql('postgres', $preview), $want_preview,
	'preview() on the coordinator counts what it counts on one node, on every shard');

my $outcome = q{
SELECT string_agg(format('%s %s %s %s %s %s', id, status, rows_anonymized, phone, email, error), E'\n' ORDER BY id)
FROM anonymize.anonymize_request};
my $receipts = q{
SELECT string_agg(format('%s %s %s %s', request_id, target, col, rows), E'\n'
                  ORDER BY request_id, target, col)
FROM anonymize.request_log WHERE event = 'rewrite'};
my $content = q{
SELECT string_agg(x, E'\n' ORDER BY x) FROM (
  SELECT 'calls ' || md5(string_agg(c::text, ',' ORDER BY id)) FROM calls c
  UNION ALL SELECT 'chats ' || md5(string_agg(c::text, ',' ORDER BY id)) FROM chats c
  UNION ALL SELECT 'mails ' || md5(string_agg(c::text, ',' ORDER BY id)) FROM tenant.mails c
  UNION ALL SELECT 'sms ' || md5(string_agg(c::text, ',' ORDER BY id)) FROM sms c
  UNION ALL SELECT 'events ' || md5(string_agg(c::text, ',' ORDER BY id)) FROM events c
  UNION ALL SELECT 'raw ' || md5(string_agg(c::text, ',' ORDER BY id)) FROM raw c) s(x)};

is($single->safe_psql('postgres', 'SELECT anonymize.run()'), '2', 'one node: two requests done');
is($coord->safe_psql('postgres', 'SELECT anonymize.run()'), '2',
	'the coordinator: the same two requests done');
my $want_outcome = $single->safe_psql('postgres', $outcome);
like($want_outcome, qr/^3 Held  \S+ \S* would rewrite 750 rows/m, 'the switchboard number is Held on one node');
is($coord->safe_psql('postgres', $outcome), $want_outcome,
	'statuses, rows_anonymized, masks and the Held count are those of one node');
is($coord->safe_psql('postgres', $receipts), $single->safe_psql('postgres', $receipts),
	'the receipts per target are those of one node');
is($coord->safe_psql('postgres', $content), $single->safe_psql('postgres', $content),
	'every row of every table is what one node left');


# confirm() the Held one: the next run applies it
$_->safe_psql('postgres', 'SELECT anonymize.confirm(3)') for ($coord, $single);
my $log_at = -s $coord->logfile;
is($coord->safe_psql('postgres', 'SELECT anonymize.run()'), '1', 'the confirmed request is done');
like(slurp_file($coord->logfile, $log_at),
	qr/WARNING:  Done requests are not applied again to Citus table "public\.calls"/,
	'the ledger of Done requests is not applied to a Citus table, and the run says so in the log');
$single->safe_psql('postgres', 'SELECT anonymize.run()');
is($coord->safe_psql('postgres', $outcome), $single->safe_psql('postgres', $outcome),
	'after confirm(): as on one node');
is($coord->safe_psql('postgres', $receipts), $single->safe_psql('postgres', $receipts),
	'after confirm(): the receipts of one node');
is($coord->safe_psql('postgres', $content), $single->safe_psql('postgres', $content),
	'after confirm(): the rows of one node');

# ---------------------------------------------------------------------
# Search, and the workers
# ---------------------------------------------------------------------
is($coord->safe_psql('postgres',
	q{SELECT anonymize.is_anonymized('+47 987 65 432')::text || anonymize.is_anonymized('Bob.Test@MyTest.no')::text
	  || anonymize.is_anonymized('99999999')::text}),
	'truetruefalse', 'is_anonymized() on the coordinator answers for rows on the workers');

($rc, $out, $err) = $workers[0]->psql('postgres', q{
	\set VERBOSITY verbose
	SELECT anonymize.run()});
like($err, qr/0A000: anonymize runs on the Citus coordinator, not on a worker node/,
	'run() on a worker node is refused');
# the workers' own scheduling workers stay idle: only the coordinator runs
wait_status($_, "worker_state = 'no extension'", 'the scheduling worker of ' . $_->name . ' to stay idle')
  for @workers;
is(join(',', map { $_->safe_psql('postgres', 'SELECT count(*) FROM anonymize.run_log') } @workers),
	'0,0', 'no run ever ran on a worker');
is($workers[0]->safe_psql('postgres', 'SELECT count(*) FROM anonymize.anonymize_request'),
	'0', 'the extension\'s tables stay on the coordinator');

# GRANT and REVOKE on a distributed table go through, the guard's event
# trigger with them
$coord->safe_psql('postgres', q{
CREATE ROLE portal LOGIN;
GRANT USAGE ON SCHEMA anonymize TO portal;
GRANT EXECUTE ON FUNCTION anonymize.is_anonymized(text) TO portal;
GRANT SELECT ON calls, chats TO portal;
});
is($coord->safe_psql('postgres', q{SELECT count(*) FROM calls WHERE caller = 'Anonymized'},
	extra_params => [ '-U', 'portal' ]),
	$single->safe_psql('postgres', q{SELECT count(*) FROM calls WHERE caller = 'Anonymized'}),
	'GRANT on a distributed table propagates: the portal reads it through the coordinator');
$coord->safe_psql('postgres', 'REVOKE SELECT ON chats FROM portal');

# no server log names an identifier (the page checks below name them)
log_has_no($_, '98765432', 'bob.test@mytest.no') for ($coord, @workers);

# no page of any shard keeps Bob's number or email (erased up to today)
$coord->safe_psql('postgres', 'CHECKPOINT');
for my $node ($coord, @workers)
{
	# the shards (name_102008), their TOAST tables and indexes
	my $rels = $node->safe_psql('postgres', q{
		WITH s AS (SELECT oid FROM pg_class
		           WHERE relkind = 'r' AND relname ~ '_[0-9]{6}$'
		             AND relnamespace IN ('public'::regnamespace, 'tenant'::regnamespace))
		SELECT string_agg(oid::regclass::text, ' ' ORDER BY oid)
		FROM (SELECT oid FROM s
		      UNION SELECT reltoastrelid FROM pg_class WHERE oid IN (SELECT oid FROM s) AND reltoastrelid <> 0
		      UNION SELECT indexrelid FROM pg_index WHERE indrelid IN (SELECT oid FROM s)) r
		WHERE pg_relation_size(oid) > 0});
	my @rels = split / /, $rels;
	ok(@rels > 0, 'node ' . $node->name . ' holds shards');
	pages_have_no($node, 'postgres', \@rels, '98765432', 'bob.test@mytest.no', 'Bob.Test@MyTest.no');
}

# ---------------------------------------------------------------------
# A worker stopped during a run
# ---------------------------------------------------------------------
my $more = q{
INSERT INTO calls SELECT 2000 + g, '+4790000001', 'q1', '2024-05-01'::timestamptz + g * interval '1 hour'
FROM generate_series(1, 30) g;
INSERT INTO anonymize.anonymize_request (phone, to_date) VALUES ('90000001', current_date);
};
$_->safe_psql('postgres', $more) for ($coord, $single);
# a row of the request on a shard of worker2, locked: the run's UPDATE
# waits there, and worker2 stops under it
my $held_id = $coord->safe_psql('postgres', sprintf(q{
	SELECT min(g) FROM generate_series(2001, 2030) g
	JOIN citus_shards s ON s.shardid = get_shard_id_for_distribution_column('calls', g)
	WHERE s.nodeport = %d}, $workers[1]->port));
my $locker = $coord->background_psql('postgres');
$locker->query_safe('BEGIN');
$locker->query_safe("SELECT 1 FROM calls WHERE id = $held_id FOR UPDATE");
my $runner = $coord->background_psql('postgres', on_error_stop => 0);
$runner->query_until(qr/started/, "\\echo started\nSELECT anonymize.run();\n\\echo finished\n");
$coord->poll_query_until('postgres', q{
	SELECT count(*) = 1 FROM pg_stat_activity
	WHERE backend_type = 'anonymize run()' AND query LIKE '%rewriting public.calls on its shards%'})
  or die 'the run never reached the rewrite of calls';
$workers[1]->stop('immediate');
$runner->query_until(qr/finished/, '');
eval { $locker->quit; };
eval { $runner->quit; };
like($runner->{stderr}, qr/ERROR/, 'a run whose worker stops under it fails');
is($coord->safe_psql('postgres', q{SELECT status FROM anonymize.anonymize_request WHERE id = 4}),
	'Running', 'the request is not Done while a shard still holds its rows');
like($coord->safe_psql('postgres', q{SELECT outcome || ': ' || error FROM anonymize.run_log ORDER BY id DESC LIMIT 1}),
	qr/^failed: .+/, 'the run log says what failed');
$workers[1]->start;
is($coord->safe_psql('postgres', 'SELECT anonymize.run()'), '1',
	'the next run, with the worker back, finishes it');
$single->safe_psql('postgres', 'SELECT anonymize.run()');
is($coord->safe_psql('postgres', $outcome), $single->safe_psql('postgres', $outcome),
	'after the fault: statuses and counts of one node');
is($coord->safe_psql('postgres', $receipts), $single->safe_psql('postgres', $receipts),
	'after the fault: the receipts of one node');
is($coord->safe_psql('postgres', $content), $single->safe_psql('postgres', $content),
	'after the fault: the rows of one node');

# ---------------------------------------------------------------------
# kill -9 of the coordinator's run in its rewrite
# ---------------------------------------------------------------------
my $more2 = q{
INSERT INTO calls SELECT 3000 + g, '+4790000002', 'q2', '2024-06-01'::timestamptz + g * interval '1 hour'
FROM generate_series(1, 30) g;
INSERT INTO anonymize.anonymize_request (phone, to_date) VALUES ('90000002', current_date);
};
$_->safe_psql('postgres', $more2) for ($coord, $single);
# a row of the request locked on its shard: the run's UPDATE waits there
$locker = $coord->background_psql('postgres');
$locker->query_safe('BEGIN');
$locker->query_safe('SELECT 1 FROM calls WHERE id = 3015 FOR UPDATE');
$runner = $coord->background_psql('postgres');
$runner->query_until(qr/started/, "\\echo started\nSELECT anonymize.run();\n");
$coord->poll_query_until('postgres', q{
	SELECT count(*) = 1 FROM pg_stat_activity
	WHERE backend_type = 'anonymize run()' AND query LIKE '%rewriting public.calls on its shards%'})
  or die 'the run never reached the rewrite of calls';
my $pid = $coord->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'anonymize run()'");
kill 'KILL', $pid;
eval { $locker->quit; };
eval { $runner->quit; };
$coord->poll_query_until('postgres', 'SELECT true')
  or die 'the coordinator did not come back';
is($coord->safe_psql('postgres', q{
	SELECT r.status || ' ' || coalesce((SELECT sum(rows) FROM anonymize.request_log l
	                                    WHERE l.request_id = r.id AND l.event = 'rewrite'), 0)
	FROM anonymize.anonymize_request r WHERE r.id = 5}),
	'Running 0', 'the killed run left its request Running, with no receipt');
is($coord->safe_psql('postgres', q{SELECT count(*) FROM calls WHERE caller = '+4790000002'}),
	'30', '... and every row of it on the shards as it was');
is($coord->safe_psql('postgres', 'SELECT anonymize.run()'), '1', 'the next run finishes it');
$single->safe_psql('postgres', 'SELECT anonymize.run()');
is($coord->safe_psql('postgres', $outcome), $single->safe_psql('postgres', $outcome),
	'after the kill: statuses and counts of one node');
is($coord->safe_psql('postgres', $receipts), $single->safe_psql('postgres', $receipts),
	'after the kill: the receipts of one node');
is($coord->safe_psql('postgres', $content), $single->safe_psql('postgres', $content),
	'after the kill: the rows of one node');
is($coord->safe_psql('postgres', q{SELECT string_agg(outcome, ',' ORDER BY id) FROM anonymize.runs}),
	'ok,ok,failed,ok,interrupted,ok', 'the killed run is shown as interrupted');
# the run's vacuum, reindex and scrub of every placement went through
ok($coord->poll_query_until('postgres',
		'SELECT vacuumed_at IS NOT NULL FROM anonymize.run_log ORDER BY id DESC LIMIT 1'),
	'the last run vacuumed, reindexed and scrubbed every placement and recorded it');

# ---------------------------------------------------------------------
# protect() on Citus tables
# ---------------------------------------------------------------------
# Rows of a number and an email that no request named yet, in the
# hash-distributed, the reference and the schema-sharded table, and of a
# number with more rows than anonymize.max_rows_per_request (Held)
my $guard_data = q{
INSERT INTO calls SELECT 6000 + g, CASE WHEN g % 2 = 0 THEN '45454545' ELSE '+47 454 54 545' END,
       'q' || g % 3, '2024-03-01 12:00+01'::timestamptz + g * interval '1 day'
FROM generate_series(1, 60) g;
INSERT INTO calls SELECT 7000 + g, '56565656', 'q' || g % 3, '2024-01-01 12:00+01'::timestamptz + g * interval '1 hour'
FROM generate_series(1, 600) g;
INSERT INTO chats SELECT 600 + g, 'Eve.Guard@Example.no', date '2024-03-01' + g FROM generate_series(1, 20) g;
INSERT INTO tenant.mails SELECT 600 + g, 'eve.guard@example.no', timestamp '2024-03-01' + g * interval '1 day'
FROM generate_series(1, 20) g;
};
$_->safe_psql('postgres', $guard_data) for ($coord, $single);
$single->safe_psql('postgres', q{
CREATE ROLE portal LOGIN;
GRANT USAGE ON SCHEMA anonymize TO portal;
});
# protect() first, then GRANT: the workers' event triggers used to write
# the guard's grants from every shard's connection (a distributed deadlock)
for my $node ($coord, $single)
{
	$node->safe_psql('postgres', q{
SELECT anonymize.protect('calls');
SELECT anonymize.protect('chats');
SELECT anonymize.protect('tenant.mails');
GRANT SELECT ON calls TO portal;
BEGIN;
GRANT SELECT ON chats TO portal;
GRANT USAGE ON SCHEMA tenant TO portal;
GRANT SELECT ON tenant.mails TO portal;
COMMIT;
GRANT INSERT, DELETE, SELECT ON anonymize.anonymize_request TO portal;
});
}
is($coord->safe_psql('postgres', q{
	SELECT string_agg(logicalrelid::text || ':' || partmethod::text, ',' ORDER BY logicalrelid::text)
	FROM pg_dist_partition WHERE logicalrelid::text LIKE 'anonymize.%'}),
	'anonymize.citus_guard:n,anonymize.citus_guard_key:n',
	'protect() of a Citus table makes the guard\'s digests and key reference tables');
my $guard_fn = q{'anonymize._citus_guard_visible(text, timestamptz, "char", "char")'};
is(join(',', map { $_->safe_psql('postgres', "SELECT has_function_privilege('portal', $guard_fn, 'EXECUTE')::text") }
		($coord, @workers)),
	'true,true,true', 'GRANT after protect(): the portal may run the guard on every node');
is(join(',', map { $_->safe_psql('postgres', q{
		SELECT count(*) FROM pg_policy WHERE polname = 'anonymize_guard'
		  AND pg_get_expr(polqual, polrelid) LIKE '%_citus_guard_visible%'}) } @workers),
	join(',', map { $_->safe_psql('postgres', q{
		SELECT count(*) FROM pg_class WHERE relname ~ '^(calls|chats|mails)(_[0-9]+)?$'
		  AND relkind IN ('r', 'p') AND relnamespace IN ('public'::regnamespace, 'tenant'::regnamespace)}) } @workers),
	'Citus put the guard\'s policy on every shard and shell table of the workers');

# what the portal sees, by number, by queue and by a full scan, through
# the coordinator; the same as the superuser sees, for comparison
my %guard_q = (
	'1 number' => q{SELECT count(*) FROM calls WHERE caller IN ('45454545', '+47 454 54 545')},
	'2 number after' => q{SELECT count(*) FROM calls WHERE caller IN ('45454545', '+47 454 54 545') AND started >= '2024-04-02'},
	'3 queue' => q{SELECT count(*) FROM calls WHERE queue = 'q1'},
	'4 scan' => q{SELECT count(*) FROM calls},
	'5 held number' => q{SELECT count(*) FROM calls WHERE caller = '56565656'},
	'6 chats email' => q{SELECT count(*) FROM chats WHERE chatter = 'Eve.Guard@Example.no'},
	'7 chats scan' => q{SELECT count(*) FROM chats},
	'8 mails email' => q{SELECT count(*) FROM tenant.mails WHERE sender = 'eve.guard@example.no'},
	'9 mails scan' => q{SELECT count(*) FROM tenant.mails},
);
my $counts = sub {
	my ($node, @as) = @_;
	return join(', ', map { "$_: " . $node->safe_psql('postgres', $guard_q{$_}, extra_params => [@as]) }
		sort keys %guard_q);
};
my $super = $counts->($coord);
is($super, $counts->($single), 'the same rows on the cluster and on one node');
is($counts->($coord, '-U', 'portal'), $super, 'no request yet: the portal sees every row');

# a Waiting request, filed by the portal's role: hidden at once
my $file_eve = q{INSERT INTO anonymize.anonymize_request (phone, email, to_date, archive, sms_survey)
                 VALUES ('45454545', 'eve.guard@example.no', '2024-04-01', true, true)};
$_->safe_psql('postgres', $file_eve, extra_params => [ '-U', 'portal' ]) for ($coord, $single);
my $want = $counts->($single, '-U', 'portal');

like($want, qr/^1 number: 29, 2 number after: 29, 3 queue: \d+, 4 scan: \d+, 5 held number: 600, 6 chats email: 0, 7 chats scan: \d+, 8 mails email: 0, 9 mails scan: \d+$/,
	'one node, a Waiting request: its rows up to its date hidden, those after it not');
is($counts->($coord, '-U', 'portal'), $want,
	'the cluster, a Waiting request: the portal sees through the coordinator what it sees on one node');
my ($sq) = $super =~ /4 scan: (\d+)/;
my ($pq) = $want =~ /4 scan: (\d+)/;
is($sq - $pq, 31, 'the full scan hides exactly the request\'s 31 calls up to its date');

# cancelled (deleted while Waiting): visible again
$_->safe_psql('postgres', q{DELETE FROM anonymize.anonymize_request WHERE status = 'Waiting'},
	extra_params => [ '-U', 'portal' ]) for ($coord, $single);
is($counts->($coord, '-U', 'portal'), $super, 'a cancelled request\'s rows are visible again');
is($coord->safe_psql('postgres', 'SELECT count(*) FROM anonymize.citus_guard'), '0',
	'... and its digests left the reference table');

# filed again, and a request that the Held guard stops
my $file_held = q{INSERT INTO anonymize.anonymize_request (phone, to_date) VALUES ('56565656', current_date)};
for my $node ($coord, $single)
{
	$node->safe_psql('postgres', $file_eve, extra_params => [ '-U', 'portal' ]);
	$node->safe_psql('postgres', $file_held, extra_params => [ '-U', 'portal' ]);
}
is($counts->($coord, '-U', 'portal'), $counts->($single, '-U', 'portal'),
	'two Waiting requests: as on one node');
for my $w (@workers)
{
	my $n = $w->safe_psql('postgres', q{
		SELECT count(*) FROM pg_class WHERE relname ~ '^citus_guard(_key)?_[0-9]+$'
		  AND relnamespace = 'anonymize'::regnamespace});
	is($n, '2', 'worker ' . $w->name . ' holds a placement of both guard tables');
}
is($coord->safe_psql('postgres', 'SELECT anonymize.run()'), '1', 'the cluster: Eve\'s request Done');
is($single->safe_psql('postgres', 'SELECT anonymize.run()'), '1', 'one node: Eve\'s request Done');
is($coord->safe_psql('postgres', q{SELECT status FROM anonymize.anonymize_request WHERE phone = '56565656'}),
	'Held', 'the switchboard request is Held');
$want = $counts->($single, '-U', 'portal');
like($want, qr/^1 number: 29, 2 number after: 29, 3 queue: \d+, 4 scan: \d+, 5 held number: 0, 6 chats email: 0,/,
	'one node after the run: Eve\'s rows erased up to her date, the Held request\'s rows hidden');
is($counts->($coord, '-U', 'portal'), $want, 'the cluster after the run: Done and Held as on one node');
is($counts->($coord), $counts->($single), 'and the rows erased are those of one node');
is($coord->safe_psql('postgres', 'SELECT count(DISTINCT digest) FROM anonymize.citus_guard'), '1',
	'the reference table keeps the Held request\'s digest only');

# Running: a run waits in its rewrite on a row lock of a shard
my $file_run = q{
INSERT INTO calls SELECT 8000 + g, '67676767', 'q2', '2024-02-01'::timestamptz + g * interval '1 hour'
FROM generate_series(1, 20) g;
INSERT INTO anonymize.anonymize_request (phone, to_date) VALUES ('67676767', current_date);
};
$_->safe_psql('postgres', $file_run) for ($coord, $single);
my $run_q = q{SELECT count(*) FROM calls WHERE caller = '67676767'};
$locker = $coord->background_psql('postgres');
$locker->query_safe('BEGIN');
$locker->query_safe('SELECT 1 FROM calls WHERE id = 8005 FOR UPDATE');
$runner = $coord->background_psql('postgres');
$runner->query_until(qr/started/, "\\echo started\nSELECT anonymize.run();\n\\echo finished\n");
$coord->poll_query_until('postgres', q{
	SELECT count(*) = 1 FROM pg_stat_activity
	WHERE backend_type = 'anonymize run()' AND query LIKE '%rewriting public.calls on its shards%'})
  or die 'the run never reached the rewrite of calls';
is($coord->safe_psql('postgres', q{SELECT status FROM anonymize.anonymize_request WHERE phone = '67676767'}),
	'Running', 'the request is Running');
is($coord->safe_psql('postgres', $run_q, extra_params => [ '-U', 'portal' ]) . ' '
	. $coord->safe_psql('postgres', $guard_q{'4 scan'}, extra_params => [ '-U', 'portal' ]),
	$single->safe_psql('postgres', $run_q, extra_params => [ '-U', 'portal' ]) . ' '
	. $single->safe_psql('postgres', $guard_q{'4 scan'}, extra_params => [ '-U', 'portal' ]),
	'a Running request: its rows hidden by number and in a full scan, as on one node (Waiting there)');
is($coord->safe_psql('postgres', $run_q, extra_params => [ '-U', 'portal' ]), '0', '... all 20 of them');
$locker->query_safe('COMMIT');
$runner->query_until(qr/finished/, '');
eval { $locker->quit; };
eval { $runner->quit; };
$single->safe_psql('postgres', 'SELECT anonymize.run()');
is($coord->safe_psql('postgres', q{SELECT status FROM anonymize.anonymize_request ORDER BY id DESC LIMIT 1}),
	'Done', 'the run went on once the lock was released');
is($counts->($coord, '-U', 'portal'), $counts->($single, '-U', 'portal'),
	'after that run: the portal sees what it sees on one node');

# REVOKE: the guard's grants leave every node, with no deadlock either
$coord->safe_psql('postgres', 'REVOKE SELECT ON calls, chats, tenant.mails FROM portal');
is(join(',', map { $_->safe_psql('postgres', "SELECT has_function_privilege('portal', $guard_fn, 'EXECUTE')::text") }
		($coord, @workers)),
	'false,false,false', 'REVOKE: the portal may no longer run the guard on any node');
$coord->safe_psql('postgres', 'GRANT SELECT ON calls TO portal');
is($coord->safe_psql('postgres', $guard_q{'5 held number'}, extra_params => [ '-U', 'portal' ]), '0',
	'GRANT again: the Held request\'s rows stay hidden');
$coord->safe_psql('postgres', q{SELECT anonymize.unprotect('calls')});
is($coord->safe_psql('postgres', $guard_q{'5 held number'}, extra_params => [ '-U', 'portal' ]), '600',
	'unprotect(): the Held request\'s rows are visible again');
is(join(',', map { $_->safe_psql('postgres', q{
		SELECT count(*) FROM pg_class WHERE relname ~ '^calls(_[0-9]+)?$' AND relrowsecurity}) } ($coord, @workers)),
	'0,0,0', '... and row-level security is off on every shard again');

# Citus copies policies to the shards as permissive ones: a Citus table
# with row-level security of its own is refused, with the reason
$coord->safe_psql('postgres', 'ALTER TABLE raw ENABLE ROW LEVEL SECURITY; CREATE POLICY mine ON raw USING (id > 0)');
($rc, $out, $err) = $coord->psql('postgres', q{
	\set VERBOSITY verbose
	SELECT anonymize.protect('raw')});
like($err, qr/0A000: Citus table "(public\.)?raw" has row-level security of its own/,
	'protect() refuses a Citus table with policies of its own');

# no server log names an identifier of these requests
log_has_no($_, '45454545', 'eve.guard@example.no', '56565656') for ($coord, @workers);

done_testing();
