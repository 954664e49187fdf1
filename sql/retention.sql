-- Retention: Done requests older than anonymize.request_retention leave the
-- page, their receipts kept as per-day counts; SMS-survey answers older
-- than anonymize.sms_survey_retention are anonymized.  Both are called by
-- the nightly run; here they are called directly.
SET client_min_messages = warning;
SET datestyle = ISO;
-- days are counted in anonymize.timezone
SET anonymize.timezone = 'Europe/Oslo';

-- the settings: defaults, accepted and refused values
SHOW anonymize.request_retention;
SHOW anonymize.sms_survey_retention;
SELECT q, r.code, r.message, r.detail
FROM (VALUES
	($$SET anonymize.request_retention = '6 months'$$),
	($$SET anonymize.request_retention = 'P1Y'$$),
	($$SET anonymize.request_retention = '400 days'$$),
	($$SET anonymize.request_retention = ''$$),
	($$SET anonymize.request_retention = 'forever'$$),
	($$SET anonymize.request_retention = '-1 month'$$),
	($$SET anonymize.request_retention = '0'$$),
	($$SET anonymize.request_retention = '1 year -1 day'$$),
	($$SET anonymize.sms_survey_retention = '4 months'$$),
	($$SET anonymize.sms_survey_retention = '4 bananas'$$)
) AS t(q), LATERAL regress.try(q) r;
RESET anonymize.request_retention;
RESET anonymize.sms_survey_retention;

-- the portal can neither change them nor call the functions
SET SESSION AUTHORIZATION regress_anonymize_portal;
SELECT r.code, r.message
FROM (VALUES
	($$SET anonymize.request_retention = '1 day'$$),
	($$SELECT anonymize._purge_requests()$$),
	($$SELECT anonymize._sms_survey_retention()$$),
	($$SELECT * FROM anonymize.request_log_daily$$)
) AS t(q), LATERAL regress.try(q) r;
RESET SESSION AUTHORIZATION;

------------------------------------------------------------------------
-- Purging the page
------------------------------------------------------------------------

-- Done requests as a restore would load them (a superuser may insert any
-- status), with their receipts and digests: two done on 2024-01-15, one
-- on 2024-03-01, one done last week, and old unfinished ones.
CREATE TEMP TABLE ids (name text PRIMARY KEY, id bigint);
WITH r AS (
	INSERT INTO anonymize.anonymize_request
		(phone, email, to_date, comment, status, created_at, done_at, rows_anonymized, error)
	VALUES
		('******32', NULL, '2024-01-10', 'old A', 'Done', '2024-01-10', '2024-01-15 02:00+01', 3, NULL),
		(NULL, 'b*****@e******.com', '2024-01-10', 'old B', 'Done', '2024-01-10', '2024-01-15 02:30+01', 1, NULL),
		('******55', NULL, '2024-02-20', 'old C', 'Done', '2024-02-20', '2024-03-01 02:00+01', 0, NULL),
		('******77', NULL, current_date - 10, 'recent', 'Done', now() - interval '9 days', now() - interval '7 days', 2, NULL),
		('98765401', NULL, '2024-01-10', 'old held', 'Held', '2024-01-10', NULL, NULL, 'would rewrite 200000 rows'),
		('98765402', NULL, '2024-01-10', 'old failed', 'Failed', '2024-01-10', NULL, NULL, 'target dropped'),
		('98765403', NULL, '2024-01-10', 'old waiting', 'Waiting', '2024-01-10', NULL, NULL, NULL)
	RETURNING id, comment
)
INSERT INTO ids SELECT comment, id FROM r;
INSERT INTO anonymize.request_log (request_id, event, status, target, col, rows, logged_at)
SELECT i.id, e.event, e.status::anonymize.request_status, e.target, e.col, e.rows, e.at
FROM ids i
JOIN (VALUES
	('old A', 'status', 'Waiting', NULL, NULL, NULL, timestamptz '2024-01-10'),
	('old A', 'rewrite', NULL, 'public.calls', 'caller', 2, '2024-01-15 02:00+01'),
	('old A', 'rewrite', NULL, 'public.chats', 'chatter', 1, '2024-01-15 02:00+01'),
	('old A', 'status', 'Done', NULL, NULL, NULL, '2024-01-15 02:00+01'),
	('old B', 'rewrite', NULL, 'public.calls', 'caller', 1, '2024-01-15 02:30+01'),
	('old B', 'status', 'Done', NULL, NULL, NULL, '2024-01-15 02:30+01'),
	('old C', 'status', 'Done', NULL, NULL, NULL, '2024-03-01 02:00+01'),
	('recent', 'rewrite', NULL, 'public.calls', 'caller', 2, now() - interval '7 days'),
	('recent', 'status', 'Done', NULL, NULL, NULL, now() - interval '7 days'),
	('old held', 'status', 'Held', NULL, NULL, NULL, '2024-01-15 02:00+01'),
	('old failed', 'status', 'Failed', NULL, NULL, NULL, '2024-01-15 02:00+01')
) AS e(name, event, status, target, col, rows, at) ON e.name = i.name;
INSERT INTO anonymize.request_private (request_id, phone_digest)
SELECT id, '\x00' FROM ids WHERE name IN ('old A', 'recent');

-- two cancellations: one on 2024-01-15, one today
SET SESSION AUTHORIZATION regress_anonymize_portal;
INSERT INTO anonymize.anonymize_request (phone, comment) VALUES ('98765404', 'cancelled long ago');
INSERT INTO anonymize.anonymize_request (phone, comment) VALUES ('98765405', 'cancelled today');
RESET SESSION AUTHORIZATION;
INSERT INTO ids SELECT comment, id FROM anonymize.anonymize_request WHERE comment LIKE 'cancelled%';
SET SESSION AUTHORIZATION regress_anonymize_portal;
DELETE FROM anonymize.anonymize_request WHERE comment LIKE 'cancelled%';
RESET SESSION AUTHORIZATION;
UPDATE anonymize.request_log SET logged_at = '2024-01-15 12:00+01'
WHERE request_id = (SELECT id FROM ids WHERE name = 'cancelled long ago');

-- off: nothing happens
SET anonymize.request_retention = '';
SELECT anonymize._purge_requests() AS purged;

-- 12 months: the three old Done requests and the old cancellation go
RESET anonymize.request_retention;
SELECT anonymize._purge_requests() AS purged;
SELECT i.name, r.status
FROM ids i LEFT JOIN anonymize.anonymize_request r ON r.id = i.id
ORDER BY i.name;
-- their receipts and digests went with them; the others' stayed
SELECT i.name, count(l.id) AS receipts, bool_or(p.request_id IS NOT NULL) AS digest
FROM ids i
LEFT JOIN anonymize.request_log l ON l.request_id = i.id
LEFT JOIN anonymize.request_private p ON p.request_id = i.id
GROUP BY i.name ORDER BY i.name;
-- what stays: counts per day, in anonymize.timezone (set to Europe/Oslo above)
SELECT day, requests_done, requests_cancelled, rows_anonymized, rows_by_target
FROM anonymize.request_log_daily ORDER BY day;
SELECT kind, target, col, cutoff < now() - interval '11 months' AS cutoff_a_year_back,
       rows, detail
FROM anonymize.retention_log ORDER BY id;

-- again: nothing more to purge
SELECT anonymize._purge_requests() AS purged;

-- a request done later on an already aggregated day adds to its counts
WITH r AS (
	INSERT INTO anonymize.anonymize_request (email, to_date, comment, status, done_at, rows_anonymized)
	VALUES ('c*****@e******.com', '2024-01-14', 'old D', 'Done', '2024-01-15 23:30+01', 4)
	RETURNING id
)
INSERT INTO anonymize.request_log (request_id, event, target, col, rows, logged_at)
SELECT id, 'rewrite', t.target, t.col, t.rows, '2024-01-15 23:30+01'
FROM r, (VALUES ('public.calls', 'caller'::name, 1), ('public.sms', 'phone', 3)) t(target, col, rows);
SELECT anonymize._purge_requests() AS purged;
SELECT day, requests_done, requests_cancelled, rows_anonymized, rows_by_target
FROM anonymize.request_log_daily ORDER BY day;

-- a shorter retention reaches the recent request too
SET anonymize.request_retention = '1 day';
SELECT anonymize._purge_requests() AS purged;
SELECT count(*) FILTER (WHERE status = 'Done') AS done_left,
       string_agg(comment, ', ' ORDER BY comment) AS left_on_page
FROM anonymize.anonymize_request WHERE comment LIKE 'old%' OR comment = 'recent';
RESET anonymize.request_retention;

-- no identifier anywhere in what retention keeps
SELECT (SELECT count(*) FROM anonymize.request_log_daily d WHERE d::text ~ '98765|@') +
       (SELECT count(*) FROM anonymize.retention_log l WHERE l::text ~ '98765|@') AS identifiers_kept;

------------------------------------------------------------------------
-- SMS survey answers
------------------------------------------------------------------------

CREATE TABLE regress_sms_answer (
	id			serial PRIMARY KEY,
	phone		text,
	answered_at	timestamptz NOT NULL,
	answer		text
);
-- a partitioned one with a date column and a varchar identifier
CREATE TABLE regress_sms_raw (
	sender		varchar(40),
	day			date NOT NULL
) PARTITION BY RANGE (day);
CREATE TABLE regress_sms_raw_old PARTITION OF regress_sms_raw
	FOR VALUES FROM ('2000-01-01') TO ('2025-01-01');
CREATE TABLE regress_sms_raw_new PARTITION OF regress_sms_raw
	FOR VALUES FROM ('2025-01-01') TO ('2100-01-01');
-- an archive table: never touched by survey retention
CREATE TABLE regress_sms_calls (caller text, started_at timestamptz NOT NULL);

SELECT anonymize.add_target('regress_sms_answer', 'phone', 'phone', 'sms_survey', 'answered_at');
SELECT anonymize.add_target('regress_sms_raw', 'sender', 'phone', 'sms_survey', 'day');
SELECT anonymize.add_target('regress_sms_calls', 'caller', 'phone', 'archive', 'started_at');

-- 20001 old answers (more than two batches of anonymize.batch_size), and
-- recent, NULL and empty ones
INSERT INTO regress_sms_answer (phone, answered_at, answer)
SELECT '+47' || (90000000 + g), now() - interval '6 months' - g * interval '1 minute', 'old'
FROM generate_series(1, 20001) g;
INSERT INTO regress_sms_answer (phone, answered_at, answer) VALUES
	('+4790000001', now() - interval '1 month', 'recent'),
	(NULL, now() - interval '1 year', 'no number'),
	('', now() - interval '1 year', 'empty number');
INSERT INTO regress_sms_raw VALUES
	('004790000002', '2024-06-01'), ('98765432', '2024-12-31'),
	('98765432', current_date - 200), ('98765432', current_date - 3);
INSERT INTO regress_sms_calls VALUES ('98765432', '2020-01-01');

-- off by default
SELECT anonymize._sms_survey_retention() AS anonymized;

SET anonymize.sms_survey_retention = '4 months';
SELECT anonymize._sms_survey_retention() AS anonymized;
SELECT answer, CASE WHEN phone ~ '^\+47900' THEN '+47900...' ELSE phone END AS phone, count(*)
FROM regress_sms_answer GROUP BY 1, 2 ORDER BY 1, 2;
SELECT tableoid::regclass AS partition, sender, day > current_date - 10 AS recent
FROM regress_sms_raw ORDER BY 1, 3, 2;
SELECT * FROM regress_sms_calls;
SELECT kind, target, col, cutoff < now() - interval '3 months' AS cutoff_months_back, rows
FROM anonymize.retention_log WHERE kind = 'sms_survey' ORDER BY id;

-- again: nothing left to do
SELECT anonymize._sms_survey_retention() AS anonymized;

-- the replacement is anonymize.replacement
SET anonymize.replacement = 'Slettet';
SET anonymize.sms_survey_retention = '2 days';
SELECT anonymize._sms_survey_retention() AS anonymized;
SELECT answer, CASE WHEN phone ~ '^\+47900' THEN '+47900...' ELSE phone END AS phone, count(*)
FROM regress_sms_answer GROUP BY 1, 2 ORDER BY 1, 2;
SELECT sender, count(*) FROM regress_sms_raw GROUP BY 1 ORDER BY 1;
RESET anonymize.replacement;
RESET anonymize.sms_survey_retention;

-- clean up what later tests do not expect
SELECT anonymize.remove_target('regress_sms_answer', 'phone');
SELECT anonymize.remove_target('regress_sms_raw', 'sender');
SELECT anonymize.remove_target('regress_sms_calls', 'caller');
DROP TABLE regress_sms_answer, regress_sms_raw, regress_sms_calls;
