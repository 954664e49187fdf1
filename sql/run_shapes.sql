-- What the run writes into ordinary archive shapes:
-- - it rewrites as logical replication applies changes: an ordinary
--   audit trigger or rule on the target does not fire, so nothing copies
--   the old value; stored generated columns are recomputed;
-- - a row whose time is NULL is erased and counted (preview: undated);
-- - erase => 'null' on text and on number columns (digits of an
--   international number), a per-target replacement;
-- - a constraint or a firing trigger added after registration fails the
--   requests of that target only, with the table and the reason; batches
--   committed before keep exact receipts; the other requests are Done;
-- - materialized views that read a target are refreshed, or left when
--   anonymize.refresh_materialized_views is off.
CREATE SCHEMA shp;
CREATE TABLE shp.mails (id int, sender text, at date NOT NULL,
						domain text GENERATED ALWAYS AS (split_part(sender, '@', 2)) STORED);
CREATE TABLE shp.mails_audit (sender text, via text);
CREATE FUNCTION shp.audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO shp.mails_audit VALUES (row_to_json(OLD)::text, TG_NAME);
	RETURN NEW;
END
$$;
CREATE TRIGGER mails_audit BEFORE UPDATE ON shp.mails FOR EACH ROW EXECUTE FUNCTION shp.audit();
CREATE RULE mails_audit_rule AS ON UPDATE TO shp.mails DO ALSO
	INSERT INTO shp.mails_audit VALUES (OLD.sender, 'rule');
CREATE TABLE shp.calls (id int, caller text, at timestamptz);
CREATE TABLE shp.sms (id int, number varchar(20), at date NOT NULL);
CREATE TABLE shp.raw (id int, number bigint, at date NOT NULL);
CREATE TABLE shp.rawn (id int, number numeric, at date NOT NULL);
CREATE TABLE shp.chats (id int, chatter text, at date NOT NULL);
CREATE TABLE shp.late (id int, number text, at date NOT NULL);
CREATE TABLE shp.always (id int, number text, at date NOT NULL);
CREATE TABLE shp.pairs (id int, number text, note text, at date NOT NULL);

INSERT INTO shp.mails VALUES (1, 'bob.shape@mytest.no', '2023-01-01'), (2, 'Bob.Shape@MyTest.no', '2030-01-01'),
	(3, 'carol@mytest.no', '2023-01-01');
INSERT INTO shp.calls VALUES (1, '98700021', NULL), (2, '98700021', '2023-01-01'), (3, '98700021', '2030-01-01'),
	(4, '98700022', NULL);
INSERT INTO shp.sms VALUES (1, '98700021', '2023-01-01'), (2, '98700022', '2023-01-01');
INSERT INTO shp.raw VALUES (1, 4798700021, '2023-01-01'), (2, 98700021, '2023-01-01'),
	(3, 4698700021, '2023-01-01'), (4, -4798700021, '2023-01-01'), (5, 4798700021, '2030-01-01');
INSERT INTO shp.rawn VALUES (1, 4798700021, '2023-01-01'), (2, 4798700021.5, '2023-01-01'),
	(3, 4798700022, '2023-01-01');
INSERT INTO shp.chats VALUES (1, 'bob.shape@mytest.no', '2023-01-01'), (2, '98700021', '2023-01-01');
INSERT INTO shp.late VALUES (1, '98700023', '2023-01-01'), (2, '98700029', '2023-01-01');
INSERT INTO shp.always VALUES (1, '98700024', '2023-01-01');
INSERT INTO shp.pairs VALUES (1, '98700025', NULL, '2023-01-01'), (2, '98700025', NULL, '2023-01-01'),
	(3, '98700025', 'x', '2023-01-01');

SELECT anonymize.add_target('shp.mails', 'sender', 'email', 'archive', 'at');
SELECT anonymize.add_target('shp.calls', 'caller', 'phone', 'archive', 'at');
SELECT anonymize.add_target('shp.sms', 'number', 'phone', 'archive', 'at', erase => 'null');
SELECT anonymize.add_target('shp.raw', 'number', 'phone', 'archive', 'at', erase => 'null');
SELECT anonymize.add_target('shp.rawn', 'number', 'phone', 'archive', 'at', erase => 'null');
SELECT anonymize.add_target('shp.chats', 'chatter', 'phone_or_email', 'archive', 'at', replacement => '(erased)');
SELECT anonymize.add_target('shp.late', 'number', 'phone', 'archive', 'at');
SELECT anonymize.add_target('shp.always', 'number', 'phone', 'archive', 'at');
SELECT anonymize.add_target('shp.pairs', 'number', 'phone', 'archive', 'at');

-- after registration: a CHECK the replacement violates, a trigger that
-- fires in replica mode, a CHECK that only some rows violate
ALTER TABLE shp.late ADD CONSTRAINT late_digits CHECK (number ~ '^[0-9+ ]+$');
CREATE TRIGGER always_audit BEFORE UPDATE ON shp.always FOR EACH ROW EXECUTE FUNCTION shp.audit();
ALTER TABLE shp.always ENABLE ALWAYS TRIGGER always_audit;
ALTER TABLE shp.pairs ADD CONSTRAINT pairs_note CHECK (number <> 'Anonymized' OR note IS NULL);

-- copies: a materialized view with a unique index (refreshed
-- CONCURRENTLY), one without, one through a view
CREATE MATERIALIZED VIEW shp.calls_mv AS SELECT id, caller FROM shp.calls;
CREATE UNIQUE INDEX ON shp.calls_mv (id);
CREATE MATERIALIZED VIEW shp.mails_mv AS SELECT id, sender FROM shp.mails;
CREATE VIEW shp.mails_v AS SELECT id, sender FROM shp.mails WHERE id < 3;
CREATE MATERIALIZED VIEW shp.mails_v_mv AS SELECT * FROM shp.mails_v;
-- one whose refresh fails once the rows are erased (division by zero):
-- a WARNING in the server log, the view left as it was, the run goes on
CREATE MATERIALIZED VIEW shp.fragile_mv AS
	SELECT 2 / count(*) FILTER (WHERE id IN (1, 2) AND caller LIKE '987%') AS x FROM shp.calls;

SELECT tbl, col, erase, replacement, time_nullable, triggers, materialized_views
FROM anonymize.targets WHERE tbl::text LIKE 'shp.%' ORDER BY tbl::text;

INSERT INTO anonymize.anonymize_request (phone, email, to_date, comment)
VALUES ('98700021', 'bob.shape@mytest.no', '2024-01-01', 'shapes'),
       ('98700023', NULL, '2024-01-01', 'late check'),
       ('98700024', NULL, '2024-01-01', 'late trigger'),
       ('98700025', NULL, '2024-01-01', 'some rows');
SELECT r.comment, p.target, p.rows, p.undated, p.triggers, p.materialized_views
FROM anonymize.anonymize_request r, LATERAL anonymize.preview(r.id) p
WHERE r.comment IN ('shapes', 'late check', 'late trigger', 'some rows') AND p.rows > 0
ORDER BY r.id, p.target::text;

-- the search guard reads a number column as the run does, and hides a
-- row of unknown time that a pending request names (the run erases it)
SELECT anonymize.protect('shp.raw');
SELECT pg_get_expr(p.polqual, p.polrelid) AS guard
FROM pg_policy p WHERE p.polrelid = 'shp.raw'::regclass AND p.polname = 'anonymize_guard';
SELECT anonymize.unprotect('shp.raw');
SELECT id, number, anonymize._guard_visible(CASE WHEN number::text ~ '^[0-9]+$' THEN '+' || number::text END,
                                            at, 'a', 'p') AS visible
FROM shp.raw ORDER BY id;
SELECT id, at, anonymize._guard_visible(caller, at, 'a', 'p') AS visible FROM shp.calls ORDER BY id;

-- one row per batch: the failing batch of shp.pairs comes after two that
-- commit
ALTER SYSTEM SET anonymize.batch_size = 1;
SELECT pg_reload_conf();
SELECT anonymize.run() AS finished;
SELECT regress.wait_run();
ALTER SYSTEM RESET anonymize.batch_size;
SELECT pg_reload_conf();

SELECT comment, status, rows_anonymized, error FROM anonymize.anonymize_request
WHERE comment IN ('shapes', 'late check', 'late trigger', 'some rows') ORDER BY id;
SELECT r.comment, l.event, l.status, l.target, l.rows
FROM anonymize.request_log l JOIN anonymize.anonymize_request r ON r.id = l.request_id
WHERE r.comment IN ('shapes', 'late check', 'late trigger', 'some rows') AND l.event <> 'status'
ORDER BY r.id, l.target;
SELECT requests_done, requests_failed, rows_rewritten, outcome, error
FROM anonymize.runs ORDER BY id DESC LIMIT 1;

-- no trigger or rule fired: nothing was copied; the generated column
-- follows the new value
SELECT count(*) AS audit_rows FROM shp.mails_audit;
SELECT * FROM shp.mails ORDER BY id;
-- the row of unknown time is erased
SELECT * FROM shp.calls ORDER BY id;
-- NULL, in text and in numbers read as international numbers
SELECT * FROM shp.sms ORDER BY id;
SELECT * FROM shp.raw ORDER BY id;
SELECT * FROM shp.rawn ORDER BY id;
-- the target's own replacement
SELECT * FROM shp.chats ORDER BY id;
-- the failed targets: untouched where they failed, exact where they did not
SELECT * FROM shp.late ORDER BY id;
SELECT * FROM shp.always ORDER BY id;
SELECT * FROM shp.pairs ORDER BY id;
-- the materialized views were refreshed, and keep no old copy
SELECT * FROM shp.calls_mv ORDER BY id;
SELECT * FROM shp.mails_mv ORDER BY id;
SELECT * FROM shp.mails_v_mv ORDER BY id;
SELECT * FROM shp.fragile_mv;
-- (live rows: those after the request's date)
SELECT t.tbl, regress.raw_copies(t.tbl, '98700021') + regress.raw_copies(t.tbl, 'bob.shape@') AS tuples_in_pages,
       regress.live_copies(t.tbl, '98700021') + regress.live_copies(t.tbl, 'bob.shape@') AS live_rows
FROM (VALUES ('shp.calls'::regclass), ('shp.calls_mv'), ('shp.mails'), ('shp.mails_mv'), ('shp.mails_v_mv'),
             ('shp.sms'), ('shp.chats')) AS t(tbl)
ORDER BY 1;

-- anonymize.refresh_materialized_views = off leaves them as they were
ALTER SYSTEM SET anonymize.refresh_materialized_views = off;
SELECT pg_reload_conf();
INSERT INTO shp.calls VALUES (5, '98700026', '2023-01-01');
REFRESH MATERIALIZED VIEW shp.calls_mv;
INSERT INTO anonymize.anonymize_request (phone, to_date, comment)
VALUES ('98700026', '2024-01-01', 'matview left');
SELECT anonymize.run() AS finished;
SELECT regress.wait_run();
ALTER SYSTEM RESET anonymize.refresh_materialized_views;
SELECT pg_reload_conf();
SELECT id, caller FROM shp.calls WHERE id = 5;
SELECT id, caller FROM shp.calls_mv WHERE id = 5;

-- SMS-survey retention writes what the run writes: NULL into a number
-- column, the target's replacement, in every table of an inheritance
-- tree, firing no ordinary trigger
CREATE TABLE shp.answers (id int, number bigint, at timestamptz NOT NULL);
CREATE TABLE shp.answers_old () INHERITS (shp.answers);
CREATE TABLE shp.answers_txt (id int, number text, at timestamptz NOT NULL);
CREATE TRIGGER answers_audit BEFORE UPDATE ON shp.answers_txt FOR EACH ROW EXECUTE FUNCTION shp.audit();
INSERT INTO shp.answers VALUES (1, 4798700031, '2020-01-01');
INSERT INTO shp.answers_old VALUES (2, 4798700032, '2020-01-01'), (3, 4798700033, now());
INSERT INTO shp.answers_txt VALUES (1, '98700031', '2020-01-01'), (2, '98700032', now());
SELECT anonymize.add_target('shp.answers', 'number', 'phone', 'sms_survey', 'at', erase => 'null');
SELECT anonymize.add_target('shp.answers_txt', 'number', 'phone', 'sms_survey', 'at', replacement => 'gone');
SET anonymize.sms_survey_retention = '4 months';
SELECT anonymize._sms_survey_retention() AS anonymized;
RESET anonymize.sms_survey_retention;
SELECT current_setting('session_replication_role') AS role_after;
SELECT tableoid::regclass AS tbl, id, number FROM shp.answers ORDER BY id;
SELECT id, number FROM shp.answers_txt ORDER BY id;
SELECT count(*) AS audit_rows FROM shp.mails_audit;
SELECT target, col, rows FROM anonymize.retention_log WHERE target LIKE 'shp.%' ORDER BY id;
DELETE FROM anonymize.retention_log WHERE target LIKE 'shp.%';

SELECT count(anonymize.remove_target(tbl, col)) AS removed FROM anonymize.target WHERE tbl::text LIKE 'shp.%';
SET client_min_messages = warning;
DROP SCHEMA shp CASCADE;
RESET client_min_messages;
