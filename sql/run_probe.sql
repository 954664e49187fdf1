-- An index over anonymize.canonical_phone(col, country_code, trunk_prefix)
-- lets preview() and the run look up each requested number instead of
-- reading the whole table.  What it must keep:
-- - canonical_phone() reads an archive value as the run does, NULL for
--   anything that is not a phone number, never an error;
-- - a probe reports exactly the rows a scan reports: the same data in a
--   table with the index and in one without it ends the same after a run
--   (formats, cut-off dates, rows with no time, varchar columns);
-- - no probe where it could miss a row: an index built with other
--   settings, a partial index, an email target, a target whose rows the
--   ledger must also check (then the run scans, and late rows are erased).
SELECT left(v, 20) AS v, anonymize.canonical_phone(v, '47', '') AS plain,
	   anonymize.canonical_phone(v, '46', '0') AS swedish
FROM (VALUES ('987 00 031'), ('+47 987 00 031'), ('0047-98700031'), ('(0)8 123 45 67'),
			 ('not a number'), (''), (repeat('9', 2000))) x(v)
ORDER BY 1;
SELECT anonymize.canonical_phone(NULL, '47', '') IS NULL AS strict;
SELECT provolatile, proisstrict FROM pg_proc WHERE oid = 'anonymize.canonical_phone(text,text,text)'::regprocedure;

CREATE SCHEMA prb;
-- the same rows twice: prb.calls probed, prb.plain scanned
CREATE TABLE prb.calls (id int, caller text, at timestamptz);
CREATE TABLE prb.plain (id int, caller text, at timestamptz);
CREATE TABLE prb.sms (id int, number varchar(20), at date NOT NULL);
CREATE TABLE prb.other (id int, caller text, at date NOT NULL);
CREATE TABLE prb.part (id int, caller text, at date NOT NULL);
INSERT INTO prb.calls
SELECT g, CASE g % 5 WHEN 0 THEN '987 00 031' WHEN 1 THEN '+4798700031' WHEN 2 THEN '0047 98 70 00 31'
				   WHEN 3 THEN '98700032' ELSE 'unknown' END,
	   CASE WHEN g % 7 = 0 THEN NULL WHEN g % 3 = 0 THEN '2030-01-01'::timestamptz ELSE '2023-01-01' END
FROM generate_series(1, 200) g;
INSERT INTO prb.plain SELECT * FROM prb.calls;
INSERT INTO prb.sms SELECT id, caller, coalesce(at, '2023-01-01')::date FROM prb.calls;
INSERT INTO prb.other SELECT id, caller, coalesce(at, '2023-01-01')::date FROM prb.calls;
INSERT INTO prb.part SELECT id, caller, coalesce(at, '2023-01-01')::date FROM prb.calls;
CREATE INDEX calls_canon ON prb.calls (anonymize.canonical_phone(caller, '47', ''));
CREATE INDEX sms_canon ON prb.sms (anonymize.canonical_phone(number, '47', ''));
CREATE INDEX other_canon ON prb.other (anonymize.canonical_phone(caller, '46', ''));
CREATE INDEX part_canon ON prb.part (anonymize.canonical_phone(caller, '47', '')) WHERE id > 100;
SELECT anonymize.add_target('prb.calls', 'caller', 'phone', 'archive', 'at');
SELECT anonymize.add_target('prb.plain', 'caller', 'phone', 'archive', 'at');
SELECT anonymize.add_target('prb.sms', 'number', 'phone', 'archive', 'at');
SELECT anonymize.add_target('prb.other', 'caller', 'phone', 'archive', 'at');
SELECT anonymize.add_target('prb.part', 'caller', 'phone', 'archive', 'at');
ANALYZE prb.calls, prb.plain, prb.sms, prb.other, prb.part;

-- a server with no Done request yet: the ledger is empty (the earlier
-- tests' entries are put back at the end)
CREATE TABLE prb.saved_ledger AS SELECT * FROM anonymize.ledger;
DELETE FROM anonymize.ledger;
INSERT INTO anonymize.anonymize_request (phone, to_date, comment)
VALUES ('98700031', '2025-06-30', 'probe');

-- preview(): the probed tables are looked up in their index, never read
-- whole; the others are scanned; the counts are the same (the statistics
-- of this session reported first, so that those of the transaction are
-- preview()'s)
SELECT pg_stat_force_next_flush();
BEGIN;
SELECT p.target, p.rows, p.undated
FROM anonymize.anonymize_request r, LATERAL anonymize.preview(r.id) p
WHERE r.comment = 'probe' AND p.target::text LIKE 'prb.%'
ORDER BY 1;
SELECT relname, seq_scan, idx_scan FROM pg_stat_xact_user_tables
WHERE schemaname = 'prb' AND relname <> 'saved_ledger' ORDER BY 1;
COMMIT;

-- what the run reads, from the statistics of the tables: before, and after
-- its process has left (it reports them then)
SELECT pg_stat_force_next_flush();
CREATE FUNCTION prb.reads() RETURNS TABLE (relname name, seq_scan bigint, idx_scan bigint)
LANGUAGE sql AS $$
	SELECT relname, seq_scan, coalesce(idx_scan, 0) FROM pg_stat_user_tables
	WHERE schemaname = 'prb' AND relname <> 'saved_ledger'
$$;
CREATE TABLE prb.reads_before AS SELECT * FROM prb.reads();

-- the run: the probed tables end exactly as the scanned one
SELECT anonymize.run() AS finished;
SELECT regress.wait_run();
SELECT pg_stat_clear_snapshot();
SELECT a.relname, a.seq_scan > b.seq_scan AS scanned, a.idx_scan > b.idx_scan AS looked_up
FROM prb.reads() a JOIN prb.reads_before b USING (relname)
ORDER BY 1;
SELECT comment, status, rows_anonymized FROM anonymize.anonymize_request WHERE comment = 'probe';
SELECT c.id, c.caller, p.caller AS scanned
FROM prb.calls c JOIN prb.plain p USING (id)
WHERE c.caller IS DISTINCT FROM p.caller
ORDER BY 1;
SELECT caller, at IS NULL AS undated, at > '2025-06-30' AS later, count(*)
FROM prb.calls GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;
SELECT number, count(*) FROM prb.sms GROUP BY 1 ORDER BY 1;

-- the ledger now holds the Done request: a row of it written later is
-- found by its age, which only a scan sees; so the next run scans the
-- probed table too, and erases it (a probe for the new request alone
-- would leave it); preview(), which does not apply the ledger, still
-- probes
INSERT INTO prb.calls VALUES (1001, '98700031', '2024-01-01'), (1002, '98700032', '2024-01-01');
INSERT INTO anonymize.anonymize_request (phone, to_date, comment)
VALUES ('98700032', '2020-01-01', 'probe after');
SELECT pg_stat_force_next_flush();
BEGIN;
SELECT p.target, p.rows
FROM anonymize.anonymize_request r, LATERAL anonymize.preview(r.id) p
WHERE r.comment = 'probe after' AND p.target = 'prb.calls'::regclass;
SELECT relname, seq_scan, idx_scan FROM pg_stat_xact_user_tables WHERE relname = 'calls' AND schemaname = 'prb';
COMMIT;
SELECT pg_stat_force_next_flush();
TRUNCATE prb.reads_before;
INSERT INTO prb.reads_before SELECT * FROM prb.reads();
SELECT anonymize.run() AS finished;
SELECT regress.wait_run();
SELECT pg_stat_clear_snapshot();
SELECT a.relname, a.seq_scan > b.seq_scan AS scanned
FROM prb.reads() a JOIN prb.reads_before b USING (relname)
WHERE a.relname = 'calls';
SELECT id, caller FROM prb.calls WHERE id > 1000 ORDER BY 1;
SELECT r.comment, l.event, l.target, l.rows
FROM anonymize.request_log l JOIN anonymize.anonymize_request r ON r.id = l.request_id
WHERE r.comment LIKE 'probe%' AND l.event = 'late' AND l.target = 'prb.calls'
ORDER BY 1;

INSERT INTO anonymize.ledger SELECT * FROM prb.saved_ledger;
SELECT count(anonymize.remove_target(tbl, col)) AS removed FROM anonymize.target WHERE tbl::text LIKE 'prb.%';
DROP SCHEMA prb CASCADE;
