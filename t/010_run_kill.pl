# The run killed with SIGKILL in the middle of its rewrite, without
# shared_preload_libraries: after the crash restart the request is still
# Running and its receipts equal the rows actually rewritten; the next
# run() finishes it with exact counts, marks the dead run interrupted,
# vacuums what the dead run left, and the server log never names the
# identifier.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use AnonymizeTest;

my $node = new_node('run_kill', settings => q{
shared_preload_libraries = ''
anonymize.batch_size = 500
restart_after_crash = on
log_statement = none
log_min_messages = debug1
});

$node->safe_psql('postgres', q{
CREATE EXTENSION anonymize;
CREATE EXTENSION pageinspect;
CREATE TABLE calls (id int PRIMARY KEY, caller text, at timestamptz NOT NULL);
INSERT INTO calls
SELECT g, CASE WHEN g % 4 = 0 THEN '+4791234567' WHEN g % 4 = 1 THEN '912 34 567'
               ELSE (90000000 + g)::text END,
       '2024-01-01'
FROM generate_series(1, 40000) g;
SELECT anonymize.add_target('calls', 'caller', 'phone', 'archive', 'at');
INSERT INTO anonymize.anonymize_request (phone, to_date) VALUES ('91234567', '2024-06-30');
});

# keep the run in the middle: a lock on a matching row half-way
my $locker = $node->background_psql('postgres');
$locker->query_safe('BEGIN');
$locker->query_safe('SELECT 1 FROM calls WHERE id = 20001 FOR UPDATE');

my $runner = $node->background_psql('postgres');
$runner->query_until(qr/started/, "\\echo started\nSELECT anonymize.run();\n");

$node->poll_query_until('postgres', q{
	SELECT count(*) = 1 FROM pg_stat_activity
	WHERE backend_type = 'anonymize run()' AND wait_event_type = 'Lock'})
  or die 'the run never waited for the locked row';
my $pid = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'anonymize run()'");
my $activity = $node->safe_psql('postgres',
	"SELECT query FROM pg_stat_activity WHERE backend_type = 'anonymize run()'");
like($activity, qr/rewriting public\.calls, rows \d+ to \d+ of 20000 \(requests 1\)/,
	'pg_stat_activity shows the rewrite in progress');

kill 'KILL', $pid;
eval { $locker->quit; };
eval { $runner->quit; };
$node->poll_query_until('postgres', 'SELECT true')
  or die 'the server did not come back';

my ($status, $receipts, $rewritten) = split /\|/, $node->safe_psql('postgres', q{
	SELECT r.status,
	       coalesce((SELECT sum(rows) FROM anonymize.request_log WHERE request_id = r.id AND event = 'rewrite'), 0),
	       (SELECT count(*) FROM calls WHERE caller = 'Anonymized')
	FROM anonymize.anonymize_request r});
is($status, 'Running', 'the killed run left its request Running');
ok($rewritten > 0 && $rewritten < 20000, "killed in the middle ($rewritten of 20000 rows)");
is($receipts, $rewritten, 'receipts equal the rows actually rewritten');

is($node->safe_psql('postgres', 'SELECT anonymize.run()'), '1', 'the next run finishes the request');
# the worker vacuums once our transaction is over; wait for it to exit
$node->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'anonymize run()'")
  or die 'the run worker did not exit';

is( $node->safe_psql('postgres', q{
	SELECT r.status || ' ' || r.rows_anonymized || ' ' ||
	       (SELECT sum(rows) FROM anonymize.request_log WHERE request_id = r.id AND event = 'rewrite') || ' ' ||
	       (SELECT count(*) FROM calls WHERE caller = 'Anonymized') || ' ' ||
	       (SELECT count(*) FROM calls WHERE caller IN ('+4791234567', '912 34 567'))
	FROM anonymize.anonymize_request r}),
	'Done 20000 20000 20000 0',
	'Done with exact counts: rows, receipts and the table agree');
is($node->safe_psql('postgres', q{SELECT string_agg(outcome, ',' ORDER BY id) FROM anonymize.runs}),
	'interrupted,ok', 'the dead run is shown as interrupted');
is( $node->safe_psql('postgres', q{
	SELECT count(*)
	FROM generate_series(0, pg_relation_size('calls') / 8192 - 1) AS b,
	     LATERAL heap_page_items(get_raw_page('calls', b::int)) AS i
	WHERE i.t_data IS NOT NULL
	  AND (position('91234567'::bytea IN i.t_data) > 0 OR position('912 34 567'::bytea IN i.t_data) > 0)}),
	'0', 'no live or dead tuple keeps the identifier');

log_has_no($node, '91234567', '912 34 567', '+4791234567');
like(slurp_file($node->logfile), qr/anonymize run \d+ finished: 1 requests done, 0 held, 0 failed, \d+ rows rewritten/, 'the server log has the counts');

$node->stop;
done_testing();
