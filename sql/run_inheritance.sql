-- A legacy inheritance tree: the run erases the parent's own rows and
-- every child's, at any depth, children added after registration too
-- (with their columns in another order, or more of them), each table
-- scanned and rewritten alone; the receipt of the target counts the rows
-- per table in its detail, as for partitions; preview() counts the same.
CREATE SCHEMA inh;
CREATE TABLE inh.calls (id int, caller text, queue text, started_at timestamptz NOT NULL);
CREATE TABLE inh.calls_2022 () INHERITS (inh.calls);
CREATE TABLE inh.calls_2022_q1 () INHERITS (inh.calls_2022);
SELECT anonymize.add_target('inh.calls', 'caller', 'phone', 'archive', 'started_at');
-- added after registration: another column order and an extra column
CREATE TABLE inh.calls_2023 (started_at timestamptz NOT NULL, agent text, caller text, id int, queue text);
ALTER TABLE inh.calls_2023 INHERIT inh.calls;
SELECT tbl, partitioned, inherited, tables FROM anonymize.targets WHERE tbl = 'inh.calls'::regclass;

INSERT INTO inh.calls VALUES (1, '98700011', 'q', '2022-06-01'), (2, '98700012', 'q', '2022-06-01');
INSERT INTO inh.calls_2022 VALUES (3, '+47 987 00 011', 'q', '2022-07-01');
INSERT INTO inh.calls_2022_q1 VALUES (4, '004798700011', 'q', '2022-02-01');
INSERT INTO inh.calls_2023 (id, caller, queue, started_at, agent)
VALUES (5, '98700011', 'q', '2023-03-01', 'ann'), (6, '98700011', 'q', '2030-01-01', 'ann'),
       (7, '98700012', 'q', '2023-03-01', 'bob');

INSERT INTO anonymize.anonymize_request (phone, to_date, comment)
VALUES ('98700011', '2024-01-01', 'inheritance');
SELECT p.target, p.col, p.rows, p.undated
FROM anonymize.anonymize_request r, LATERAL anonymize.preview(r.id) p
WHERE r.comment = 'inheritance';
SELECT anonymize.run() AS finished;
SELECT regress.wait_run();

SELECT tableoid::regclass AS tbl, id, caller, started_at FROM inh.calls ORDER BY id;
SELECT l.event, l.status, l.target, l.col, l.rows, CASE WHEN l.event = 'rewrite' THEN l.detail::jsonb END AS per_table
FROM anonymize.request_log l JOIN anonymize.anonymize_request r ON r.id = l.request_id
WHERE r.comment = 'inheritance' ORDER BY l.id;
SELECT status, rows_anonymized FROM anonymize.anonymize_request WHERE comment = 'inheritance';
-- no tuple of any table of the tree, live or dead, keeps the number
SELECT t.tbl, regress.raw_copies(t.tbl, '98700011') AS tuples_in_pages,
       regress.live_copies(t.tbl, '98700011') AS live_rows
FROM (VALUES ('inh.calls'::regclass), ('inh.calls_2022'), ('inh.calls_2022_q1'), ('inh.calls_2023')) AS t(tbl)
ORDER BY 1;

SELECT anonymize.remove_target('inh.calls', 'caller');
SET client_min_messages = warning;
DROP SCHEMA inh CASCADE;
RESET client_min_messages;
