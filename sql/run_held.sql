-- The blast-radius guard: a request that would rewrite more than
-- anonymize.max_rows_per_request rows rewrites nothing and is Held with
-- the count; confirm() releases it and the next run applies it.  Also:
-- batches of one row (receipts add up across batches), and a request the
-- run cannot read under its settings becomes Failed.
ALTER SYSTEM SET anonymize.max_rows_per_request = 2;
ALTER SYSTEM SET anonymize.batch_size = 1;
SELECT pg_reload_conf();

CREATE SCHEMA held;
CREATE TABLE held.calls (id int PRIMARY KEY, caller text, at timestamptz);
INSERT INTO held.calls VALUES
 (1, '91111111', '2024-01-01'), (2, '+4791111111', '2024-01-02'), (3, '0047 911 11 111', '2024-01-03'),
 (4, '92222222', '2024-01-01'), (5, '93333333', '2024-01-01');
SELECT anonymize.add_target('held.calls', 'caller', 'phone', 'archive', 'at');

INSERT INTO anonymize.anonymize_request (phone, to_date, comment)
VALUES ('91111111', '2024-06-30', 'big'), ('92222222', '2024-06-30', 'small');

SELECT anonymize.run() AS finished;
SELECT regress.wait_run();
SELECT * FROM held.calls ORDER BY id;
SELECT comment, status, rows_anonymized, error, phone
FROM anonymize.anonymize_request WHERE comment IN ('big', 'small') ORDER BY comment;
SELECT requests_done, requests_held, requests_failed, rows_rewritten, outcome
FROM anonymize.runs ORDER BY id DESC LIMIT 1;
-- preview still shows what it would rewrite
SELECT p.target, p.rows
FROM anonymize.anonymize_request r, LATERAL anonymize.preview(r.id) p
WHERE r.comment = 'big' AND p.target = 'held.calls'::regclass;

-- confirm(): only a Held request; the portal cannot edit it meanwhile
SELECT r.code, regexp_replace(r.message, '[0-9]+', 'N') AS message
FROM (VALUES
	($$SELECT anonymize.confirm((SELECT id FROM anonymize.anonymize_request WHERE comment = 'small'))$$),
	($$SELECT anonymize.confirm(-1)$$)
) AS t(q), LATERAL regress.try(q) r;
SET SESSION AUTHORIZATION regress_anonymize_portal;
SELECT r.code, regexp_replace(r.message, '[0-9]+', 'N') AS message
FROM regress.try($$UPDATE anonymize.anonymize_request SET comment = 'x' WHERE comment = 'big'$$) r;
RESET SESSION AUTHORIZATION;
SELECT anonymize.confirm(id) FROM anonymize.anonymize_request WHERE comment = 'big';
SELECT p.confirmed_at IS NOT NULL AS confirmed, p.confirmed_by
FROM anonymize.request_private p JOIN anonymize.anonymize_request r ON r.id = p.request_id
WHERE r.comment = 'big';

SELECT anonymize.run() AS finished;
SELECT regress.wait_run();
SELECT * FROM held.calls ORDER BY id;
SELECT comment, status, rows_anonymized, error, phone
FROM anonymize.anonymize_request WHERE comment IN ('big', 'small') ORDER BY comment;
SELECT r.comment, l.event, l.status, l.target, l.rows, l.detail
FROM anonymize.request_log l JOIN anonymize.anonymize_request r ON r.id = l.request_id
WHERE r.comment IN ('big', 'small') ORDER BY r.comment, l.id;

-- without a country code the run cannot read a national number: Failed,
-- with a reason and no identifier in it
INSERT INTO anonymize.anonymize_request (phone, to_date, comment) VALUES ('93333333', '2024-06-30', 'national');
ALTER SYSTEM SET anonymize.country_code = '';
SELECT pg_reload_conf();
SELECT anonymize.run() AS finished;
SELECT regress.wait_run();
SELECT comment, status, error FROM anonymize.anonymize_request WHERE comment = 'national';
SELECT requests_done, requests_held, requests_failed, rows_rewritten, outcome
FROM anonymize.runs ORDER BY id DESC LIMIT 1;
SELECT * FROM held.calls WHERE id = 5;

ALTER SYSTEM RESET anonymize.country_code;
ALTER SYSTEM RESET anonymize.max_rows_per_request;
ALTER SYSTEM RESET anonymize.batch_size;
SELECT pg_reload_conf();
SELECT pg_sleep(0.3);
SELECT anonymize.remove_target('held.calls', 'caller');
