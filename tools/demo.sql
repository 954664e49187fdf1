-- tools/demo.sql: the story the demo tells, run by tools/demo.sh in a
-- database "archive" of a throwaway cluster.
\pset footer off
\pset null '-'
\set QUIET on
CREATE EXTENSION anonymize;
\set QUIET off

\echo
\echo '## 1. The administrator files two requests on the Archive - Anonymize page'
\echo
INSERT INTO anonymize.anonymize_request (phone, to_date, comment, archive, sms_survey, raw_data)
VALUES ('555551', '2023-12-15', 'Paal''s test phone', true, false, false);
INSERT INTO anonymize.anonymize_request (phone, email, to_date, comment, archive, sms_survey, raw_data)
VALUES ('004798765', 'bob.test@mytest.no', '2024-02-21', 'New test', true, false, true);

SELECT phone AS "Phone number", email AS "Email",
       to_char(to_date, 'DD-MM-YYYY') AS "To Date (including)", comment AS "Comment",
       CASE WHEN archive THEN 'yes' ELSE 'no' END AS "Archive",
       CASE WHEN sms_survey THEN 'yes' ELSE 'no' END AS "SMS Survey",
       CASE WHEN raw_data THEN 'yes' ELSE 'no' END AS "Raw Data",
       status AS "Status", user_name AS "User name"
FROM anonymize.anonymize_request ORDER BY id;

\echo
\echo '## 2. What the extension matches on: the canonical form (anonymize.country_code = 47)'
\echo
SELECT v AS "stored in the archive as", anonymize.normalize_phone(v) AS "canonical"
FROM (VALUES ('555551'), ('004798765'), ('+47 98 765'), ('(0047) 98-765'),
             ('004612345678'), ('+46 12 345 678')) AS t(v);
SELECT v AS "email as stored", anonymize.normalize_email(v) AS "canonical"
FROM (VALUES ('bob.test@mytest.no'), ('Bob.Test@MyTest.NO'),
             ('"Bob Test" <bob.test@mytest.no>')) AS t(v);

\echo
\echo '## 3. Bad input is refused with a clear error, and nothing is stored'
\echo
\set ON_ERROR_STOP off
INSERT INTO anonymize.anonymize_request (phone, comment) VALUES ('98-76 5abc', 'typo');
INSERT INTO anonymize.anonymize_request (email, to_date) VALUES ('bob@mytest.no', current_date + 30);
\set ON_ERROR_STOP on

\echo
\echo '## 4. When a request is Done, the page keeps only masked identifiers'
\echo
SELECT phone AS "entered", anonymize.mask_phone(phone) AS "shown once Done"
FROM anonymize.anonymize_request WHERE phone IS NOT NULL ORDER BY id;
SELECT email AS "entered", anonymize.mask_email(email) AS "shown once Done"
FROM anonymize.anonymize_request WHERE email IS NOT NULL ORDER BY id;

\echo
\echo '## 5. The archive: calls, chats, emails, SMS-survey answers and raw events (synthetic)'
\echo
\set QUIET on
SET client_min_messages = warning;
CREATE SCHEMA archive;
CREATE SCHEMA survey;
CREATE SCHEMA raw;
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
CREATE TABLE archive.calls (id bigserial PRIMARY KEY, caller text, queue text, agent text,
                            started_at timestamptz NOT NULL, recording text);
CREATE INDEX ON archive.calls (caller);
CREATE TABLE archive.chats (id bigserial PRIMARY KEY, chatter_id text, queue text,
                            started_at timestamp NOT NULL, log text);
CREATE TABLE archive.emails (id bigserial PRIMARY KEY, from_address text, subject text,
                             received_on date NOT NULL);
CREATE TABLE survey.sms_answers (id bigserial PRIMARY KEY, number text, score int,
                                 answered_at timestamptz NOT NULL);
CREATE TABLE raw.events (id bigserial, number text, event text, at timestamptz NOT NULL)
	PARTITION BY RANGE (at);
CREATE TABLE raw.events_2023 PARTITION OF raw.events FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
CREATE TABLE raw.events_2024 PARTITION OF raw.events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');

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
INSERT INTO survey.sms_answers (number, score, answered_at)
SELECT pg_temp.fmt(90000000 + (g * 7919) % 900000, g), 1 + g % 5,
       '2023-01-01'::timestamptz + (g % 600) * interval '1 day'
FROM generate_series(1, 10000) g;
INSERT INTO raw.events (number, event, at)
SELECT pg_temp.fmt(90000000 + (g * 7919) % 900000, g), 'event ' || g % 7,
       '2023-01-01'::timestamptz + (g % 700) * interval '1 day'
FROM generate_series(1, 20000) g;

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
INSERT INTO survey.sms_answers (number, score, answered_at) VALUES
 ('004612345678', 2, '2024-01-10 12:05+01'), ('+4798765', 5, '2024-02-01 09:10+01');
INSERT INTO raw.events (number, event, at) VALUES
 ('004798765', 'call offered', '2024-02-01 09:00+01'), ('98765', 'call answered', '2024-02-01 09:00:05+01'),
 ('004612345678', 'call offered', '2024-01-10 12:00+01');
ANALYZE;

SELECT anonymize.add_target('archive.calls', 'caller', 'phone', 'archive', 'started_at');
SELECT anonymize.add_target('archive.chats', 'chatter_id', 'phone_or_email', 'archive', 'started_at');
SELECT anonymize.add_target('archive.emails', 'from_address', 'email', 'archive', 'received_on');
SELECT anonymize.add_target('survey.sms_answers', 'number', 'phone', 'sms_survey', 'answered_at');
SELECT anonymize.add_target('raw.events', 'number', 'phone', 'raw_data', 'at');
RESET client_min_messages;
\set QUIET off
SELECT t.tbl AS "table", t.rows
FROM (VALUES ('archive.calls', (SELECT count(*) FROM archive.calls)),
             ('archive.chats', (SELECT count(*) FROM archive.chats)),
             ('archive.emails', (SELECT count(*) FROM archive.emails)),
             ('survey.sms_answers', (SELECT count(*) FROM survey.sms_answers)),
             ('raw.events', (SELECT count(*) FROM raw.events))) AS t(tbl, rows);
SELECT tbl AS "target", col, kind, scope, time_col, partitioned FROM anonymize.targets ORDER BY tbl::text;

\echo
\echo '## 6. More requests: a Swedish caller (archive and SMS survey), and a chat user (email only)'
\echo
INSERT INTO anonymize.anonymize_request (phone, to_date, comment, archive, sms_survey)
VALUES ('004612345678', '2024-01-31', 'Erik, Sweden', true, true);
INSERT INTO anonymize.anonymize_request (email, to_date, comment)
VALUES ('user42@example.com', '2024-12-31', 'chat user 42');
SELECT id, phone, email, to_date, comment, archive, sms_survey, raw_data, status
FROM anonymize.anonymize_request ORDER BY id;

\echo
\echo '## 7. The archive before: every row of the people who asked'
\echo
SELECT 'calls' AS "table", caller AS identifier, started_at::text AS "when", recording AS kept
FROM archive.calls WHERE caller ~ '(555551|98765|12 ?345 ?678)' UNION ALL
SELECT 'chats', chatter_id, started_at::text, log FROM archive.chats
WHERE chatter_id ~* '(bob\.test|98765)' UNION ALL
SELECT 'emails', from_address, received_on::text, subject FROM archive.emails WHERE from_address ~* 'bob\.test' UNION ALL
SELECT 'sms', number, answered_at::text, score::text FROM survey.sms_answers WHERE number ~ '(98765|12345678)' UNION ALL
SELECT 'events', number, at::text, event FROM raw.events WHERE number ~ '(98765|12345678)'
ORDER BY 1, 3;

\echo
\echo '## 8. preview(): what each request would rewrite, changing nothing'
\echo
SELECT r.id, r.comment, p.target, p.col, p.rows
FROM anonymize.anonymize_request r, LATERAL anonymize.preview(r.id) p
ORDER BY r.id, p.target::text;

\echo
\echo '## 9. The run, timed next to one sequential scan of every target (LIKE, as the benchmark does)'
\echo
\timing on
SELECT (SELECT count(*) FROM archive.calls WHERE caller LIKE '%x%')
     + (SELECT count(*) FROM archive.chats WHERE chatter_id LIKE '%x%')
     + (SELECT count(*) FROM archive.emails WHERE from_address LIKE '%x%')
     + (SELECT count(*) FROM survey.sms_answers WHERE number LIKE '%x%')
     + (SELECT count(*) FROM raw.events WHERE number LIKE '%x%') AS "one scan of the archive";
SELECT anonymize.run() AS "requests finished";
\timing off
SELECT id, trigger, requests_done, requests_held, rows_rewritten, outcome,
       round(extract(epoch FROM finished_at - started_at) * 1000) AS run_ms
FROM anonymize.runs ORDER BY id;

\echo
\echo '## 10. The page after: Done, masked, counted'
\echo
SELECT id, phone AS "Phone number", email AS "Email", to_char(to_date, 'DD-MM-YYYY') AS "To Date (including)",
       comment AS "Comment", status AS "Status", rows_anonymized, done_at IS NOT NULL AS done
FROM anonymize.anonymize_request ORDER BY id;

\echo
\echo '## 11. The archive after: the same rows; later contacts and other people untouched, recordings kept'
\echo
SELECT pg_sleep(0.5);
SELECT 'calls' AS "table", caller AS identifier, started_at::text AS "when", recording AS kept
FROM archive.calls WHERE recording IN ('rec/p1.wav', 'rec/p2.wav', 'rec/p3.wav', 'rec/b1.wav',
      'rec/b2.wav', 'rec/s1.wav', 'rec/e1.wav', 'rec/e2.wav') UNION ALL
SELECT 'chats', chatter_id, started_at::text, log FROM archive.chats WHERE log IN ('log/b1', 'log/b2', 'log/b3') UNION ALL
SELECT 'emails', from_address, received_on::text, subject FROM archive.emails WHERE subject IN ('my order', 'again') UNION ALL
SELECT 'sms', number, answered_at::text, score::text FROM survey.sms_answers WHERE answered_at IN ('2024-01-10 12:05+01', '2024-02-01 09:10+01') UNION ALL
SELECT 'events', number, at::text, event FROM raw.events WHERE at IN ('2024-02-01 09:00+01', '2024-02-01 09:00:05+01', '2024-01-10 12:00+01')
ORDER BY 1, 3;

\echo
\echo '## 12. The receipts: rows per request and target, and every status change; never an identifier'
\echo
SELECT request_id, event, status, target, col, rows, detail, to_char(logged_at, 'HH24:MI:SS') AS at
FROM anonymize.request_log ORDER BY request_id, id;

\echo
\echo '## 13. A second run finds nothing to do'
\echo
SELECT anonymize.run() AS "requests finished";
