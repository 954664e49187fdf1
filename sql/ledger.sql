-- The ledger: a Done request stays in force.  Later runs erase the rows
-- of its identifiers written since (late rows, on a plain and on a
-- partitioned target) up to its to_date, as receipts of event 'late',
-- without changing its status or done_at; rows older than the last run
-- are not looked at again unless an import or a restore asks for it.
-- ledger_export() and ledger_import(): the document, its refusals
-- (another key, malformed, a conflicting id) that change nothing, and
-- is_anonymized() answering from the ledger once the page row is purged.
SET client_min_messages = warning;
SET datestyle = ISO;
SET anonymize.timezone = 'Europe/Oslo';

CREATE SCHEMA ledg;
CREATE TABLE ledg.calls (id int PRIMARY KEY, caller text, started_at timestamptz NOT NULL);
CREATE TABLE ledg.events (id int, number text, at date NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE ledg.events_2023 PARTITION OF ledg.events FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
CREATE TABLE ledg.events_2024 PARTITION OF ledg.events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE ledg.sms (id int, sender text, at date NOT NULL);
SELECT anonymize.add_target('ledg.calls', 'caller', 'phone', 'archive', 'started_at');
SELECT anonymize.add_target('ledg.events', 'number', 'phone_or_email', 'archive', 'at');
SELECT anonymize.add_target('ledg.sms', 'sender', 'phone', 'sms_survey', 'at');
INSERT INTO ledg.calls VALUES (1, '91110001', '2024-01-10 12:00+01'), (2, '91110001', '2024-05-01 12:00+02');
INSERT INTO ledg.events VALUES (1, 'lisa.ledger@example.no', '2023-06-01'), (2, '91110001', '2024-02-01');
INSERT INTO ledg.sms VALUES (1, '91110001', '2024-01-10');

-- L: 91110001 and lisa.ledger@example.no up to 2024-03-01, archive only
INSERT INTO anonymize.anonymize_request (phone, email, to_date, comment)
VALUES ('91110001', 'lisa.ledger@example.no', '2024-03-01', 'ledger: L');
SELECT anonymize.run() > 0 AS finished;
SELECT regress.wait_run();
SELECT status, phone, email FROM anonymize.anonymize_request WHERE comment = 'ledger: L';
-- the run added its ledger entries: digests, no plaintext
SELECT l.kind, length(l.digest) AS digest_bytes, l.to_date, l.archive, l.sms_survey, l.raw_data,
       l.source, l.done_at = r.done_at AS same_done_at
FROM anonymize.ledger l JOIN anonymize.anonymize_request r ON r.id = l.request_id
WHERE r.comment = 'ledger: L' ORDER BY l.kind;
SELECT count(*) AS plaintext_in_ledger FROM anonymize.ledger l
WHERE position('\x3931313130303031'::bytea IN l.digest) > 0
   OR position(convert_to('lisa', 'UTF8') IN l.digest) > 0;
CREATE TEMP TABLE before AS
SELECT id, status, done_at, rows_anonymized FROM anonymize.anonymize_request WHERE comment = 'ledger: L';

-- late rows: written after L is Done, dated up to its to_date (erased),
-- after it (kept), in another scope (kept); one frozen at once (erased:
-- its raw xmin still says when it was written)
INSERT INTO ledg.calls VALUES (3, '+47 911 10 001', '2024-02-29 23:30+01'), (4, '91110001', '2024-03-02 00:10+01'),
	(5, '91110002', '2024-01-10 12:00+01');
INSERT INTO ledg.events VALUES (3, '004791110001', '2024-01-15'), (4, 'Lisa.Ledger@Example.NO', '2023-07-01'),
	(5, '91110001', '2024-06-01');
INSERT INTO ledg.sms VALUES (2, '91110001', '2024-01-11');
CREATE TABLE ledg.frozen (id int, caller text, at date NOT NULL);
SELECT anonymize.add_target('ledg.frozen', 'caller', 'phone', 'archive', 'at');
SELECT anonymize.run() AS finished;
SELECT regress.wait_run();
INSERT INTO ledg.frozen VALUES (1, '91110001', '2024-01-01');
VACUUM (FREEZE) ledg.frozen;
SELECT t_infomask & 768 = 768 AS frozen FROM heap_page_items(get_raw_page('ledg.frozen', 0));
SELECT anonymize.run() AS finished;
SELECT regress.wait_run();
SELECT id, caller, started_at FROM ledg.calls ORDER BY id;
SELECT tableoid::regclass AS partition, id, number, at FROM ledg.events ORDER BY id;
SELECT id, sender FROM ledg.sms ORDER BY id;
SELECT id, caller FROM ledg.frozen ORDER BY id;
-- receipts: 'late', per target, rows per partition; status and done_at unchanged
SELECT l.event, l.target, l.col, l.rows, l.detail::jsonb - 'run' AS detail, l.detail::jsonb ? 'run' AS has_run
FROM anonymize.request_log l JOIN anonymize.anonymize_request r ON r.id = l.request_id
WHERE r.comment = 'ledger: L' AND l.event = 'late' ORDER BY l.target, l.id;
SELECT r.status, r.done_at = b.done_at AS same_done_at, r.rows_anonymized = b.rows_anonymized AS same_rows
FROM anonymize.anonymize_request r JOIN before b USING (id);
SELECT array_agg(l.status ORDER BY l.id) AS status_receipts
FROM anonymize.request_log l JOIN before b ON b.id = l.request_id
WHERE l.event = 'status';

-- a row written before the last run's horizon is not looked at again
-- (the nightly cost), until the ledger asks for every row once
INSERT INTO ledg.calls VALUES (6, '91110001', '2024-01-20 12:00+01');
UPDATE anonymize.ledger_state SET horizon = pg_snapshot_xmax(pg_current_snapshot());
SELECT anonymize.run() AS finished;
SELECT regress.wait_run();
SELECT id, caller FROM ledg.calls WHERE id = 6;
UPDATE anonymize.ledger_state SET full_recheck = true;
SELECT anonymize.run() AS finished;
SELECT regress.wait_run();
SELECT id, caller FROM ledg.calls WHERE id = 6;
SELECT full_recheck, horizon IS NOT NULL AS has_horizon,
       system_identifier = (SELECT system_identifier FROM pg_control_system()) AS this_cluster,
       database_oid = (SELECT oid FROM pg_database WHERE datname = current_database()) AS this_database,
       'ledg.calls.caller' = ANY (targets) AS calls_checked
FROM anonymize.ledger_state;

------------------------------------------------------------------------
-- Export and import
------------------------------------------------------------------------

SELECT d ->> 'format' AS format, d ->> 'version' AS version,
       length(d ->> 'key_fingerprint') AS fingerprint_chars,
       d ->> 'key_fingerprint' = anonymize._key_fingerprint() AS our_key,
       jsonb_array_length(d -> 'entries') = (SELECT count(*) FROM anonymize.ledger) AS every_entry
FROM (SELECT anonymize.ledger_export()::jsonb AS d) x;
SELECT e - 'request_id' - 'digest' - 'done_at' AS entry, length(e ->> 'digest') AS digest_hex
FROM jsonb_array_elements(anonymize.ledger_export()::jsonb -> 'entries') e
WHERE (e ->> 'request_id')::bigint = (SELECT id FROM before) ORDER BY e ->> 'kind';
-- no identifier in the document
SELECT position('91110001' IN anonymize.ledger_export()) AS phone_at,
       position('lisa' IN lower(anonymize.ledger_export())) AS email_at;

-- what another copy of the database finished: two requests this one
-- never saw (ids past this page's), one of them a digest of 91110003
CREATE TEMP TABLE doc AS
SELECT jsonb_set(d, '{entries}', (d -> 'entries') || jsonb_build_array(
		jsonb_build_object('request_id', m + 1, 'kind', 'phone',
						   'digest', encode(sha256('not an identifier'), 'hex'),
						   'to_date', '2024-03-01', 'scopes', jsonb_build_array('raw_data'),
						   'done_at', '2024-03-02T02:00:00+01:00'),
		jsonb_build_object('request_id', m + 2, 'kind', 'phone',
						   'digest', (SELECT encode(l.digest, 'hex') FROM anonymize.ledger l
									  JOIN before b ON b.id = l.request_id WHERE l.kind = 'phone'),
						   'to_date', '2024-04-01', 'scopes', jsonb_build_array('archive', 'sms_survey'),
						   'done_at', '2024-04-02T02:00:00+02:00'))) AS d,
	   m
FROM (SELECT anonymize.ledger_export()::jsonb AS d,
			 (SELECT max(id) FROM anonymize.anonymize_request) + 100 AS m) x;

-- refused, and nothing changes: another key, malformed documents, a
-- conflicting id, a role without the grant
CREATE TEMP TABLE counts AS SELECT count(*) AS n FROM anonymize.ledger;
SELECT r.code, replace(r.message, (SELECT id FROM before)::text, 'L') AS message,
       r.detail IS NOT NULL AS has_detail, r.hint
FROM (VALUES
	((SELECT jsonb_set(d, '{key_fingerprint}', '"00000000000000000000000000000000"')::text FROM doc)),
	('not json at all'),
	('{"format": "anonymize ledger", "version": 2, "entries": []}'),
	((SELECT jsonb_set(d, '{entries,0,digest}', '"xyz"')::text FROM doc)),
	((SELECT jsonb_set(d, '{entries,0,scopes}', '["everything"]')::text FROM doc)),
	((SELECT jsonb_set(d, '{entries,0,to_date}', '"2024-13-45"')::text FROM doc)),
	((SELECT jsonb_set(d, ARRAY['entries', (o - 1)::text, 'digest'], to_jsonb(encode(sha256('x'), 'hex')))::text
	  FROM doc, jsonb_array_elements(d -> 'entries') WITH ORDINALITY AS e(v, o)
	  WHERE (v ->> 'request_id')::bigint = (SELECT id FROM before) AND v ->> 'kind' = 'phone'))
) AS t(doc), LATERAL regress.try(format('SELECT anonymize.ledger_import(%L)', t.doc)) r;
SELECT n = (SELECT count(*) FROM anonymize.ledger) AS ledger_unchanged FROM counts;
SET SESSION AUTHORIZATION regress_anonymize_portal;
SELECT r.code, r.message
FROM (VALUES ('SELECT anonymize.ledger_import(''{}'')'), ('SELECT anonymize.ledger_export()'),
			 ('SELECT * FROM anonymize.ledger'), ('SELECT * FROM anonymize.ledger_state')) AS t(q),
	 LATERAL regress.try(q) r;
RESET SESSION AUTHORIZATION;

-- the import adds what is missing, once; the next run re-checks every
-- row: the imported request erases its rows in its scopes, up to its date
UPDATE anonymize.ledger_state SET full_recheck = false;
INSERT INTO ledg.calls VALUES (7, '91110001', '2024-03-20 12:00+01'), (8, '91110001', '2024-04-20 12:00+02');
INSERT INTO ledg.sms VALUES (3, '91110001', '2024-03-25');
UPDATE anonymize.ledger_state SET horizon = pg_snapshot_xmax(pg_current_snapshot());
SELECT anonymize.ledger_import(d::text) AS added FROM doc;
SELECT anonymize.ledger_import(d::text) AS added_again FROM doc;
SELECT full_recheck FROM anonymize.ledger_state;
SELECT l.request_id - doc.m AS imported, l.kind, l.to_date, l.archive, l.sms_survey, l.raw_data, l.source
FROM anonymize.ledger l, doc WHERE l.request_id > doc.m ORDER BY 1;
-- new requests do not take the imported ids
INSERT INTO anonymize.anonymize_request (phone, to_date, comment, archive)
VALUES ('91110009', '2024-01-01', 'ledger: after import', true);
SELECT r.id > doc.m + 2 AS past_imported FROM anonymize.anonymize_request r, doc
WHERE r.comment = 'ledger: after import';
SELECT anonymize.run() AS finished;
SELECT regress.wait_run();
SELECT id, caller FROM ledg.calls WHERE id IN (4, 7, 8) ORDER BY id;
SELECT id, sender FROM ledg.sms ORDER BY id;
SELECT l.request_id - doc.m AS imported, l.event, l.target, l.rows
FROM anonymize.request_log l, doc WHERE l.request_id IN (doc.m + 1, doc.m + 2) ORDER BY l.id;
SELECT full_recheck FROM anonymize.ledger_state;

------------------------------------------------------------------------
-- Retention: the ledger outlives the page
------------------------------------------------------------------------

SHOW anonymize.ledger_retention;
SELECT r.code FROM regress.try($$SET anonymize.ledger_retention = '-1 day'$$) r;
-- L leaves the page: is_anonymized() still answers from the ledger, and
-- its late rows are still erased
SELECT anonymize.is_anonymized('91110001') AS before_purge;
SET anonymize.request_retention = '1 second';
SELECT pg_sleep(1.1);
SELECT anonymize._purge_requests() > 0 AS purged;
RESET anonymize.request_retention;
SELECT count(*) AS l_on_page FROM anonymize.anonymize_request WHERE comment = 'ledger: L';
SELECT count(*) AS l_in_ledger FROM anonymize.ledger l JOIN before b ON b.id = l.request_id;
SELECT v, anonymize.is_anonymized(v)
FROM unnest(ARRAY['91110001', '+4791110001', 'LISA.LEDGER@example.no', '91110002']) v;
INSERT INTO ledg.calls VALUES (9, '91110001', '2024-02-01 12:00+01');
SELECT anonymize.run() AS finished;
SELECT regress.wait_run();
SELECT id, caller FROM ledg.calls WHERE id = 9;
SELECT l.event, l.target, l.rows FROM anonymize.request_log l JOIN before b ON b.id = l.request_id
ORDER BY l.id;

-- anonymize.ledger_retention purges the entries of requests no longer on
-- the page, and their late receipts
ALTER SYSTEM SET anonymize.ledger_retention = '1 second';
SELECT pg_reload_conf();
SELECT pg_sleep(1);
SELECT anonymize.run() AS finished;
SELECT regress.wait_run();
ALTER SYSTEM RESET anonymize.ledger_retention;
SELECT pg_reload_conf();
SELECT count(*) AS l_in_ledger FROM anonymize.ledger l JOIN before b ON b.id = l.request_id;
SELECT count(*) AS l_receipts FROM anonymize.request_log l JOIN before b ON b.id = l.request_id;
SELECT anonymize.is_anonymized('91110001') AS after_ledger_purge;
SELECT kind, rows > 0 AS purged_some FROM anonymize.retention_log WHERE kind = 'ledger';

SELECT anonymize.remove_target(tbl, col) FROM anonymize.targets WHERE tbl::text LIKE 'ledg.%';
