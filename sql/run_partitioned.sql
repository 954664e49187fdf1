-- A partitioned target: the run scans and rewrites its leaf partitions
-- (sub-partitions, a partition with its columns in another order, the
-- default partition); receipts name the registered table.  Then a run
-- that fails half-way (a target too narrow for the replacement): the
-- error reaches the caller, the request stays Running with exact receipts
-- for what was committed, and the next run finishes it and vacuums.
CREATE SCHEMA part;
CREATE TABLE part.events (id int, number text, source text, at timestamptz NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE part.events_2023 PARTITION OF part.events FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
CREATE TABLE part.events_2024 PARTITION OF part.events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')
	PARTITION BY LIST (source);
CREATE TABLE part.events_2024_ivr PARTITION OF part.events_2024 FOR VALUES IN ('ivr');
CREATE TABLE part.events_2024_other PARTITION OF part.events_2024 DEFAULT;
CREATE TABLE part.events_default PARTITION OF part.events DEFAULT;
CREATE TABLE part.events_2022 (at timestamptz NOT NULL, source text, id int, number text);
ALTER TABLE part.events ATTACH PARTITION part.events_2022 FOR VALUES FROM ('2022-01-01') TO ('2023-01-01');
INSERT INTO part.events VALUES
 (1, '98700001', 'ivr', '2022-06-01'), (2, '+47 987 00 001', 'ivr', '2023-06-01'),
 (3, '98700001', 'ivr', '2024-03-01'), (4, '004798700001', 'web', '2024-03-02'),
 (5, '98700001', 'ivr', '2030-01-01'), (6, '98700002', 'ivr', '2023-06-01'),
 (7, '98700001', 'ivr', '2024-06-01');
SELECT anonymize.add_target('part.events', 'number', 'phone', 'raw_data', 'at');

INSERT INTO anonymize.anonymize_request (phone, to_date, comment, archive, raw_data)
VALUES ('98700001', '2024-05-01', 'partitioned', false, true);
SELECT p.target, p.col, p.rows
FROM anonymize.anonymize_request r, LATERAL anonymize.preview(r.id) p
WHERE r.comment = 'partitioned';
SELECT anonymize.run() AS finished;
SELECT regress.wait_run();
SELECT tableoid::regclass AS partition, * FROM part.events ORDER BY id;
SELECT l.event, l.status, l.target, l.col, l.rows
FROM anonymize.request_log l JOIN anonymize.anonymize_request r ON r.id = l.request_id
WHERE r.comment = 'partitioned' ORDER BY l.id;
SELECT t.tbl, n.needle, regress.raw_copies(t.tbl, n.needle) AS tuples_in_pages,
       regress.live_copies(t.tbl, n.needle) AS live_rows
FROM (VALUES ('part.events_2022'::regclass), ('part.events_2023'), ('part.events_2024_ivr'),
             ('part.events_2024_other'), ('part.events_default')) AS t(tbl),
     (VALUES ('98700001'), ('987 00 001')) AS n(needle)
ORDER BY 1, 2;

-- a target narrowed after registration: the run checks it before its
-- first batch, fails the request its rows concern (Failed, with the table
-- and the reason), keeps the receipts of what it rewrote elsewhere, and
-- goes on with the other request
CREATE TABLE part.zshort (id int, number text, at timestamptz NOT NULL);
INSERT INTO part.zshort VALUES (1, '98700003', '2024-01-01');
INSERT INTO part.events VALUES (8, '98700003', 'ivr', '2024-01-01'), (9, '+4798700003', 'web', '2024-01-02'),
 (10, '98700004', 'ivr', '2024-01-03');
SELECT anonymize.add_target('part.zshort', 'number', 'phone', 'raw_data', 'at');
ALTER TABLE part.zshort ALTER COLUMN number TYPE varchar(8);
INSERT INTO anonymize.anonymize_request (phone, to_date, comment, archive, raw_data)
VALUES ('98700003', '2024-05-01', 'narrowed', false, true),
       ('98700004', '2024-05-01', 'unconcerned', false, true);
SELECT anonymize.run() AS finished;
SELECT regress.wait_run();
SELECT comment, status, rows_anonymized, phone, error FROM anonymize.anonymize_request
WHERE comment IN ('narrowed', 'unconcerned') ORDER BY id;
SELECT r.comment, l.event, l.status, l.target, l.rows, l.detail
FROM anonymize.request_log l JOIN anonymize.anonymize_request r ON r.id = l.request_id
WHERE r.comment IN ('narrowed', 'unconcerned') ORDER BY l.id;
SELECT requests_done, requests_failed, rows_rewritten, outcome, error, vacuumed_at IS NOT NULL AS vacuumed
FROM anonymize.runs ORDER BY id DESC LIMIT 1;
SELECT id, number FROM part.events WHERE id >= 8 ORDER BY id;
SELECT * FROM part.zshort;
-- the rows rewritten before the target failed left no old version
SELECT t.tbl, regress.raw_copies(t.tbl, '98700003') AS tuples_in_pages
FROM (VALUES ('part.events_2024_ivr'::regclass), ('part.events_2024_other'), ('part.zshort')) AS t(tbl)
ORDER BY 1;
SELECT anonymize.remove_target('part.events', 'number');
SELECT anonymize.remove_target('part.zshort', 'number');

-- partitions that lie wholly after every due request's date are not
-- scanned: seq_scan of the later partitions stays as it was
INSERT INTO anonymize.anonymize_request (phone, to_date, comment, archive, raw_data)
VALUES ('98700002', '2023-12-31', 'skip', false, true);
SELECT anonymize.add_target('part.events', 'number', 'phone', 'raw_data', 'at');
SELECT pg_stat_force_next_flush();
CREATE TABLE regress.scans AS
SELECT relname, seq_scan FROM pg_stat_user_tables WHERE schemaname = 'part';
SELECT p.target, p.rows
FROM anonymize.anonymize_request r, LATERAL anonymize.preview(r.id) p
WHERE r.comment = 'skip';
SELECT anonymize.run() AS finished;
SELECT regress.wait_run();
SELECT pg_stat_clear_snapshot();
SELECT s.relname, s.seq_scan > b.seq_scan AS scanned
FROM pg_stat_user_tables s JOIN regress.scans b USING (relname)
WHERE s.schemaname = 'part' AND s.relname LIKE 'events%' ORDER BY 1;
SELECT id, number FROM part.events WHERE id = 6;
SELECT anonymize.remove_target('part.events', 'number');
