-- The run: exactly the matching rows are rewritten, across kinds (phone,
-- email, phone_or_email), scopes (archive, sms_survey, raw_data), stored
-- formats and the time cut-off; preview() changes nothing; the page is
-- masked; receipts; no old row version keeps an identifier; a second run
-- rewrites nothing.
--
-- run() works in a background worker that reads the server's settings
-- (anonymize.country_code = '47', timezone = 'Europe/Oslo' here).
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pageinspect;
SELECT count(anonymize.remove_target(tbl, col)) >= 0 AS earlier_targets_removed
FROM anonymize.target;

-- wait until the run worker is gone: it vacuums once our transaction ends
CREATE FUNCTION regress.wait_run() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	FOR i IN 1..1200 LOOP
		PERFORM pg_stat_clear_snapshot();
		IF NOT EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'anonymize run()') THEN
			RETURN;
		END IF;
		PERFORM pg_sleep(0.05);
	END LOOP;
	RAISE EXCEPTION 'the anonymize run worker did not finish';
END
$$;

-- every tuple of a table, live or dead, that holds a needle, by its raw
-- bytes: compared with the live rows that legitimately still hold it
CREATE FUNCTION regress.raw_copies(tbl regclass, needle text) RETURNS bigint
LANGUAGE sql AS $$
	SELECT count(*)
	FROM generate_series(0, pg_relation_size(tbl) / current_setting('block_size')::int - 1) AS b,
	     LATERAL heap_page_items(get_raw_page(tbl::text, b::int)) AS i
	WHERE i.t_data IS NOT NULL AND position(convert_to(needle, 'UTF8') IN i.t_data) > 0
$$;
CREATE FUNCTION regress.live_copies(tbl regclass, needle text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE n bigint;
BEGIN
	EXECUTE format('SELECT count(*) FROM %s t WHERE position(%L IN t::text) > 0', tbl, needle) INTO n;
	RETURN n;
END
$$;
RESET client_min_messages;

CREATE SCHEMA runt;
CREATE TABLE runt.calls (id int PRIMARY KEY, caller text, queue text, started_at timestamptz NOT NULL);
CREATE INDEX ON runt.calls (caller);
CREATE TABLE runt.chats (id int PRIMARY KEY, chatter_id varchar(200), started_at timestamp);
CREATE TABLE runt.emails (id int PRIMARY KEY, from_address char(60), subject text, received_on date);
CREATE TABLE runt.sms (id int PRIMARY KEY, number text, answer text, at timestamptz);
CREATE TABLE runt.raw (id int PRIMARY KEY, number text, at timestamptz);

-- A: 98765432 / bob.test@mytest.no up to 2024-02-21, archive and raw data
-- B: 004612345678 up to 2024-01-31, archive and SMS survey
-- C: carol@example.com up to 2024-03-01, SMS survey only
INSERT INTO anonymize.anonymize_request (phone, email, to_date, comment, archive, sms_survey, raw_data)
VALUES ('98765432', 'bob.test@mytest.no', '2024-02-21', 'A', true, false, true),
       ('004612345678', NULL, '2024-01-31', 'B', true, true, false),
       (NULL, 'carol@example.com', '2024-03-01', 'C', false, true, false);

INSERT INTO runt.calls VALUES
 (1, '+4798765432', 'sales', '2024-01-10 12:00+01'),
 (2, '004798765432', 'sales', '2024-01-11 12:00+01'),
 (3, '98765432', 'support', '2024-01-12 12:00+01'),
 (4, '+47 987 65 432', 'support', '2024-01-13 12:00+01'),
 (5, 'tel:+4798765432', 'support', '2024-01-14 12:00+01'),
 (6, '987.65.432', 'support', '2024-01-15 12:00+01'),
 (7, '+4698765432', 'sales', '2024-01-10 12:00+01'),       -- Sweden, same digits
 (8, '98765433', 'sales', '2024-01-10 12:00+01'),          -- another number
 (9, '98765432', 'sales', '2024-02-21 23:30+01'),          -- 23:30 local on to_date
 (10, '98765432', 'sales', '2024-02-22 00:10+01'),         -- 00:10 local the next day (UTC: still the 21st)
 (11, '98765432', 'sales', '2024-02-21 22:59:59+00'),      -- 23:59:59 local
 (12, '0046 12 345 678', 'int', '2024-01-31 23:30+01'),
 (13, '+46 12 345 678', 'int', '2024-02-01 00:10+01'),
 (14, '12345678', 'int', '2024-01-05 12:00+01'),           -- national: +4712345678
 (15, NULL, 'sales', '2024-01-10 12:00+01'),
 (16, 'Anonymous', 'sales', '2024-01-10 12:00+01'),
 (17, '+', 'sales', '2024-01-10 12:00+01'),
 (18, 'bob.test@mytest.no', 'sales', '2024-01-10 12:00+01'), -- calls are phone only
 (19, '-infinity', 'sales', '-infinity'),
 (20, '98765432', 'sales', 'infinity');
INSERT INTO runt.chats VALUES
 (1, 'Bob.Test@MyTest.no', '2024-02-21 23:59'),
 (2, '"Bob" <bob.test@mytest.no>', '2024-02-21 08:00'),
 (3, '"Bob" <bob.test@mytest.no>', '2024-02-22 00:00'),
 (4, '+4798765432', '2024-02-01 10:00'),
 (5, 'xbob.test@mytest.no', '2024-02-01 10:00'),
 (6, 'bob.test@mytest.no.evil.example', '2024-02-01 10:00'),
 (7, 'bob.test@mytest.no', NULL),
 (8, 'carol@example.com', '2024-02-01 10:00'),              -- C has no archive scope
 (9, '0046-12-345-678', '2024-01-31 12:00'),
 (10, 'not an id at all', '2024-01-01 00:00');
INSERT INTO runt.emails VALUES
 (1, ' bob.test@mytest.no ', 'hello', '2024-02-21'),
 (2, 'BOB.TEST@MYTEST.NO', 'again', '2024-02-22'),
 (3, 'mailto:bob.test@mytest.no', 'link', '2024-01-01'),
 (4, '98765432', 'a number in an email column', '2024-01-01'),
 (5, 'carol@example.com', 'archive only', '2024-01-01');
INSERT INTO runt.sms VALUES
 (1, '004612345678', '5', '2024-01-31 23:30+01'),
 (2, '+4612345678', '4', '2024-02-01 00:10+01'),
 (3, '+4798765432', '3', '2024-01-01 12:00+01'),            -- A has no SMS scope
 (4, 'Carol@Example.COM', '5', '2024-03-01 12:00+01'),
 (5, 'carol@example.com', '1', '2024-03-02 12:00+01');
INSERT INTO runt.raw VALUES
 (1, '98765432', '2024-01-01 00:00+01'),
 (2, '004612345678', '2024-01-01 00:00+01'),                -- B has no raw data scope
 (3, '+4798765432', '2024-02-22 00:00+01');

SELECT anonymize.add_target('runt.calls', 'caller', 'phone', 'archive', 'started_at');
SELECT anonymize.add_target('runt.chats', 'chatter_id', 'phone_or_email', 'archive', 'started_at');
SELECT anonymize.add_target('runt.emails', 'from_address', 'email', 'archive', 'received_on');
SELECT anonymize.add_target('runt.sms', 'number', 'phone_or_email', 'sms_survey', 'at');
SELECT anonymize.add_target('runt.raw', 'number', 'phone', 'raw_data', 'at');

CREATE TABLE regress.before AS
SELECT 'calls' AS t, c::text AS r FROM runt.calls c UNION ALL
SELECT 'chats', c::text FROM runt.chats c UNION ALL
SELECT 'emails', c::text FROM runt.emails c UNION ALL
SELECT 'sms', c::text FROM runt.sms c UNION ALL
SELECT 'raw', c::text FROM runt.raw c;

-- preview: per target in the request's scopes, changing nothing
SELECT r.comment, p.target, p.col, p.rows
FROM anonymize.anonymize_request r, LATERAL anonymize.preview(r.id) p
WHERE r.comment IN ('A', 'B', 'C') ORDER BY r.comment, p.target::text;
SELECT count(*) AS changed_by_preview FROM (
	SELECT 'calls' AS t, c::text AS r FROM runt.calls c UNION ALL
	SELECT 'chats', c::text FROM runt.chats c UNION ALL
	SELECT 'emails', c::text FROM runt.emails c UNION ALL
	SELECT 'sms', c::text FROM runt.sms c UNION ALL
	SELECT 'raw', c::text FROM runt.raw c
	EXCEPT SELECT * FROM regress.before) d;
SELECT status, count(*) FROM anonymize.anonymize_request GROUP BY status ORDER BY status;
SELECT r.code, r.message FROM regress.try('SELECT * FROM anonymize.preview(-1)') r;

-- the run
SELECT anonymize.run() AS finished;
SELECT regress.wait_run();

SELECT * FROM runt.calls ORDER BY id;
SELECT * FROM runt.chats ORDER BY id;
SELECT * FROM runt.emails ORDER BY id;
SELECT * FROM runt.sms ORDER BY id;
SELECT * FROM runt.raw ORDER BY id;

-- the page: masked, Done, counted
SELECT comment, phone, email, status, rows_anonymized, error, done_at IS NOT NULL AS has_done_at
FROM anonymize.anonymize_request WHERE comment IN ('A', 'B', 'C') ORDER BY comment;
SELECT r.code, regexp_replace(r.message, '[0-9]+', 'N') AS message FROM regress.try($$SELECT * FROM anonymize.preview((SELECT id FROM anonymize.anonymize_request WHERE comment = 'A'))$$) r;

-- receipts: one row per request and target in its scopes, and the status changes
SELECT r.comment, l.event, l.status, l.target, l.col, l.rows, l.detail
FROM anonymize.request_log l JOIN anonymize.anonymize_request r ON r.id = l.request_id
WHERE r.comment IN ('A', 'B', 'C') ORDER BY r.comment, l.id;
SELECT r.comment, r.rows_anonymized = (SELECT sum(rows) FROM anonymize.request_log l
                                       WHERE l.request_id = r.id AND l.event = 'rewrite') AS receipts_add_up
FROM anonymize.anonymize_request r WHERE r.comment IN ('A', 'B', 'C') ORDER BY 1;

-- what request_private keeps: 32-byte digests, not the plaintext
SELECT r.comment, octet_length(p.phone_digest) AS phone_digest, octet_length(p.email_digest) AS email_digest
FROM anonymize.request_private p JOIN anonymize.anonymize_request r ON r.id = p.request_id
WHERE r.comment IN ('A', 'B', 'C') ORDER BY 1;

-- the digests are HMAC-SHA256(key, kind ':' canonical form), as is_anonymized() expects
CREATE EXTENSION IF NOT EXISTS pgcrypto SCHEMA regress;
SELECT r.comment,
       p.phone_digest = regress.hmac(convert_to('p:' || anonymize.normalize_phone(
           CASE r.comment WHEN 'A' THEN '98765432' WHEN 'B' THEN '004612345678' END), 'UTF8'),
           (SELECT key FROM anonymize.secret), 'sha256') AS phone_digest_ok,
       p.email_digest = regress.hmac(convert_to('e:' || anonymize.normalize_email(
           CASE r.comment WHEN 'A' THEN 'Bob.Test@MyTest.no' WHEN 'C' THEN 'carol@example.com' END), 'UTF8'),
           (SELECT key FROM anonymize.secret), 'sha256') AS email_digest_ok
FROM anonymize.request_private p JOIN anonymize.anonymize_request r ON r.id = p.request_id
WHERE r.comment IN ('A', 'B', 'C') ORDER BY 1;

-- the runs view
SELECT id > 0 AS has_id, trigger, requests_done, requests_held, requests_failed, rows_rewritten,
       outcome, error, finished_at >= started_at AS finished, vacuumed_at IS NOT NULL AS vacuumed
FROM anonymize.runs ORDER BY id;

-- no tuple, live or dead, of a touched table or of the page holds an
-- identifier, except the live rows that are not to be rewritten: every
-- tuple found in the pages is a live row
SELECT t.tbl, n.needle, regress.raw_copies(t.tbl, n.needle) AS tuples_in_pages,
       regress.live_copies(t.tbl, n.needle) AS live_rows
FROM (VALUES ('runt.calls'::regclass), ('runt.chats'), ('runt.emails'), ('runt.sms'),
             ('runt.raw'), ('anonymize.anonymize_request'), ('anonymize.request_private'),
             ('anonymize.request_log')) AS t(tbl),
     (VALUES ('98765432'), ('987 65 432'), ('987.65.432'), ('ob.test@'), ('OB.TEST@'),
             ('ob.Test@'), ('12345678'), ('12 345 678'), ('12-345-678'), ('arol@'), ('arol@E')) AS n(needle)
WHERE regress.raw_copies(t.tbl, n.needle) > 0
ORDER BY 1, 2;

-- a second run finds nothing due and rewrites nothing
CREATE TABLE regress.after AS
SELECT 'calls' AS t, c::text AS r FROM runt.calls c UNION ALL
SELECT 'chats', c::text FROM runt.chats c UNION ALL
SELECT 'emails', c::text FROM runt.emails c UNION ALL
SELECT 'sms', c::text FROM runt.sms c UNION ALL
SELECT 'raw', c::text FROM runt.raw c;
SELECT anonymize.run() AS finished;
SELECT regress.wait_run();
SELECT count(*) AS changed_by_second_run FROM (
	SELECT 'calls' AS t, c::text AS r FROM runt.calls c UNION ALL
	SELECT 'chats', c::text FROM runt.chats c UNION ALL
	SELECT 'emails', c::text FROM runt.emails c UNION ALL
	SELECT 'sms', c::text FROM runt.sms c UNION ALL
	SELECT 'raw', c::text FROM runt.raw c
	EXCEPT SELECT * FROM regress.after) d;
SELECT requests_done, rows_rewritten, outcome FROM anonymize.runs ORDER BY id DESC LIMIT 1;

-- the portal cannot run, confirm or read the run's tables without grants
SET SESSION AUTHORIZATION regress_anonymize_portal;
SELECT r.code, r.message
FROM (VALUES ($$SELECT anonymize.run()$$), ($$SELECT anonymize.confirm(1)$$),
             ($$SELECT count(*) FROM anonymize.runs$$)) AS t(q), LATERAL regress.try(q) r;
RESET SESSION AUTHORIZATION;

-- with the README's grant the portal can preview (SECURITY DEFINER)
INSERT INTO anonymize.anonymize_request (phone, to_date, comment) VALUES ('+46 12 345 678', '2024-02-29', 'D');
GRANT EXECUTE ON FUNCTION anonymize.preview(bigint) TO regress_anonymize_portal;
SET SESSION AUTHORIZATION regress_anonymize_portal;
SELECT p.target, p.rows
FROM anonymize.anonymize_request r, LATERAL anonymize.preview(r.id) p
WHERE r.comment = 'D' ORDER BY 1;
RESET SESSION AUTHORIZATION;
REVOKE EXECUTE ON FUNCTION anonymize.preview(bigint) FROM regress_anonymize_portal;
DELETE FROM anonymize.anonymize_request WHERE comment = 'D';

-- run() refuses a transaction that has written: it would wait for it
BEGIN;
INSERT INTO runt.raw VALUES (100, 'x', now());
SELECT r.code, r.message FROM regress.try('SELECT anonymize.run()') r;
ROLLBACK;

-- the following tests register their own targets
SELECT count(anonymize.remove_target(tbl, col)) AS targets_removed
FROM anonymize.target WHERE tbl::text LIKE 'runt.%';
