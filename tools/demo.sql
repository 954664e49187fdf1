-- tools/demo.sql: the example archive of the demo, run by tools/demo.sh in
-- database "archive" of a throwaway cluster: the README's quick-start
-- tables (doc/example-archive.sql, shared with the quick start's test)
-- with about 220,000 synthetic contacts (120,000 of them a company's
-- shared line), the people the demo's requests name before and after
-- their dates, the extension and its five targets.  The story itself
-- (requests, preview, run, receipts) is told by tools/demo.sh with
-- pg_anonymize.
\pset footer off
\pset null '-'
\set QUIET on
CREATE EXTENSION anonymize;
\set QUIET on
SET client_min_messages = warning;
-- 8-digit Norwegian numbers and a few Swedish ones, stored the way
-- different systems write them
CREATE FUNCTION pg_temp.fmt(n bigint, style int) RETURNS text LANGUAGE sql IMMUTABLE AS $$
	SELECT CASE style % 6
		WHEN 0 THEN '+47' || n
		WHEN 1 THEN '0047' || n
		WHEN 2 THEN n::text
		WHEN 3 THEN '+47 ' || substr(n::text, 1, 3) || ' ' || substr(n::text, 4, 2) || ' ' || substr(n::text, 6)
		WHEN 4 THEN 'tel:+47' || n
		ELSE '+46' || n END
$$;
-- the quick start's tables, as the README shows them, and the demo's one
-- extra column: the agent who took the call
\ir ../doc/example-archive.sql
ALTER TABLE archive.calls ADD COLUMN agent text;

INSERT INTO archive.calls (caller, queue, agent, started_at, recording)
SELECT pg_temp.fmt(90000000 + (g * 7919) % 900000, g), 'queue ' || g % 12, 'agent ' || g % 40,
       '2023-01-01'::timestamptz + (g % 600) * interval '1 day' + (g % 1440) * interval '1 minute',
       'rec/' || g || '.wav'
FROM generate_series(1, 50000) g;
INSERT INTO archive.chats (chatter_id, queue, started_at, log)
SELECT CASE WHEN g % 3 = 0 THEN 'user' || g % 5000 || '@example.com'
            WHEN g % 3 = 1 THEN '"User ' || g % 5000 || '" <User' || g % 5000 || '@Example.com>'
            ELSE pg_temp.fmt(90000000 + (g * 7919) % 900000, g) END,
       'chat ' || g % 5, '2023-01-01'::timestamp + (g % 600) * interval '1 day', 'log/' || g
FROM generate_series(1, 10000) g;
INSERT INTO archive.emails (from_address, subject, received_on)
SELECT CASE WHEN g % 2 = 0 THEN 'user' || g % 5000 || '@example.com'
            ELSE 'USER' || g % 5000 || '@EXAMPLE.COM' END,
       'case ' || g, '2023-01-01'::date + g % 600
FROM generate_series(1, 10000) g;
INSERT INTO sms.answers (number, score, answered_at)
SELECT pg_temp.fmt(90000000 + (g * 7919) % 900000, g), 1 + g % 5,
       '2023-01-01'::timestamptz + (g % 600) * interval '1 day'
FROM generate_series(1, 10000) g;
INSERT INTO raw.events (number, event, at)
SELECT pg_temp.fmt(90000000 + (g * 7919) % 900000, g), 'event ' || g % 7,
       '2023-01-01'::timestamptz + (g % 700) * interval '1 day'
FROM generate_series(1, 20000) g;

-- a company's shared line, in 120,000 calls: more than
-- anonymize.max_rows_per_request (100,000), so its request is held
INSERT INTO archive.calls (caller, queue, agent, started_at, recording)
SELECT CASE g % 3 WHEN 0 THEN '22222222' WHEN 1 THEN '+47 22 22 22 22' ELSE '004722222222' END,
       'b2b', 'agent ' || g % 40, '2023-01-01'::timestamptz + (g % 600) * interval '1 day', 'rec/acme' || g || '.wav'
FROM generate_series(1, 120000) g;

-- the people of the requests, a few times each, before and after their date
INSERT INTO archive.calls (caller, queue, agent, started_at, recording) VALUES
 ('555551', 'support', 'paal', '2023-12-01 10:00+01', 'rec/p1.wav'),
 ('+47555551', 'support', 'paal', '2023-12-15 23:30+01', 'rec/p2.wav'),
 ('555551', 'support', 'paal', '2023-12-16 00:10+01', 'rec/p3.wav'),
 ('004798765', 'sales', 'anna', '2024-02-01 09:00+01', 'rec/b1.wav'),
 ('+47 987 65', 'sales', 'anna', '2024-02-20 12:00+01', 'rec/b2.wav'),
 ('+4698765', 'sales', 'anna', '2024-02-01 09:00+01', 'rec/s1.wav'),
 ('004612345678', 'int', 'erik', '2024-01-10 12:00+01', 'rec/e1.wav'),
 ('+46 12 345 678', 'int', 'erik', '2024-03-10 12:00+01', 'rec/e2.wav');
INSERT INTO archive.chats (chatter_id, queue, started_at, log) VALUES
 ('Bob.Test@MyTest.no', 'chat 1', '2024-02-10 10:00', 'log/b1'),
 ('"Bob" <bob.test@mytest.no>', 'chat 1', '2024-02-22 10:00', 'log/b2'),
 ('tel:004798765', 'chat 2', '2024-01-10 10:00', 'log/b3');
INSERT INTO archive.emails (from_address, subject, received_on) VALUES
 ('bob.test@mytest.no', 'my order', '2024-02-21'), ('BOB.TEST@MYTEST.NO', 'again', '2024-02-22');
INSERT INTO sms.answers (number, score, answered_at) VALUES
 ('004612345678', 2, '2024-01-10 12:05+01'), ('+4798765', 5, '2024-02-01 09:10+01');
INSERT INTO raw.events (number, event, at) VALUES
 ('004798765', 'call offered', '2024-02-01 09:00+01'), ('98765', 'call answered', '2024-02-01 09:00:05+01'),
 ('004612345678', 'call offered', '2024-01-10 12:00+01');
ANALYZE;

\o /dev/null
SELECT anonymize.add_target('archive.calls', 'caller', 'phone', 'archive', 'started_at');
SELECT anonymize.add_target('archive.chats', 'chatter_id', 'phone_or_email', 'archive', 'started_at');
SELECT anonymize.add_target('archive.emails', 'from_address', 'email', 'archive', 'received_on');
SELECT anonymize.add_target('sms.answers', 'number', 'phone', 'sms_survey', 'answered_at');
SELECT anonymize.add_target('raw.events', 'number', 'phone', 'raw_data', 'at');
\o
RESET client_min_messages;
\set QUIET off
SELECT t.tbl AS "table", t.rows
FROM (VALUES ('archive.calls', (SELECT count(*) FROM archive.calls)),
             ('archive.chats', (SELECT count(*) FROM archive.chats)),
             ('archive.emails', (SELECT count(*) FROM archive.emails)),
             ('sms.answers', (SELECT count(*) FROM sms.answers)),
             ('raw.events', (SELECT count(*) FROM raw.events))) AS t(tbl, rows);
SELECT tbl AS "target", col, kind, scope, time_col, partitioned FROM anonymize.targets ORDER BY tbl::text;

