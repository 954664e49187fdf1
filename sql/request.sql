-- The Anonymize page: every rule holds for plain DML and COPY by the
-- portal's role.  Errors come with SQLSTATEs a portal can act on:
-- 22023 invalid identifier or date, 23514 nothing to do, 42501 a column
-- the run owns, 55000 a request that is no longer Waiting.
SET client_min_messages = warning;

-- the table as DESIGN.md lists it
SELECT attnum, attname, format_type(atttypid, atttypmod) AS type, attnotnull,
       pg_get_expr(adbin, adrelid) AS "default"
FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE attrelid = 'anonymize.anonymize_request'::regclass AND attnum > 0
ORDER BY attnum;
SELECT enum_range(NULL::anonymize.request_status);

SET SESSION AUTHORIZATION regress_anonymize_portal;

-- the seed's second row, as the portal adds it
INSERT INTO anonymize.anonymize_request
	(phone, email, to_date, comment, archive, sms_survey, raw_data)
VALUES ('004798765', 'bob.test@mytest.no', '2024-02-21', 'New test', true, false, true)
RETURNING id, phone, email, to_date, comment, archive, sms_survey, raw_data,
          status, user_name, created_at = now() AS created_now, done_at,
          rows_anonymized, error;

-- the seed's first row (its phone is shown masked on the page once Done)
INSERT INTO anonymize.anonymize_request (phone, to_date, comment)
VALUES ('555551', '2023-12-15', 'Paal''s test phone')
RETURNING id, phone, to_date, archive, sms_survey, raw_data, status;

-- defaults: to_date today in anonymize.timezone (here the server's TimeZone,
-- so current_date), archive scope
INSERT INTO anonymize.anonymize_request (email) VALUES ('Carol <carol@example.com>')
RETURNING id, to_date = current_date AS today, archive, sms_survey, raw_data;

-- an empty form field is stored as NULL
INSERT INTO anonymize.anonymize_request (phone, email) VALUES ('98765432', '  ')
RETURNING id, phone, email IS NULL AS email_null;

-- rejected inserts: nothing is stored
SELECT r.code, r.message
FROM (VALUES
	($$INSERT INTO anonymize.anonymize_request (phone) VALUES ('98x65432')$$),
	($$INSERT INTO anonymize.anonymize_request (phone) VALUES ('12')$$),
	($$INSERT INTO anonymize.anonymize_request (phone) VALUES ('+')$$),
	($$INSERT INTO anonymize.anonymize_request (email) VALUES ('bob.test')$$),
	($$INSERT INTO anonymize.anonymize_request (phone, email) VALUES ('98765432', 'bob@')$$),
	($$INSERT INTO anonymize.anonymize_request (comment) VALUES ('no identifier')$$),
	($$INSERT INTO anonymize.anonymize_request (phone, email) VALUES ('', ' ')$$),
	($$INSERT INTO anonymize.anonymize_request (phone, archive) VALUES ('98765432', false)$$),
	($$INSERT INTO anonymize.anonymize_request (phone, to_date) VALUES ('98765432', current_date + 1)$$),
	($$INSERT INTO anonymize.anonymize_request (phone, to_date) VALUES ('98765432', 'infinity')$$),
	($$INSERT INTO anonymize.anonymize_request (phone, status) VALUES ('98765432', 'Done')$$),
	($$INSERT INTO anonymize.anonymize_request (phone, done_at) VALUES ('98765432', now())$$),
	($$INSERT INTO anonymize.anonymize_request (phone, rows_anonymized) VALUES ('98765432', 0)$$),
	($$INSERT INTO anonymize.anonymize_request (phone, error) VALUES ('98765432', 'x')$$)
) AS t(q), LATERAL regress.try(q) r;
SELECT count(*) AS rows_on_page FROM anonymize.anonymize_request;

-- a Waiting row can be changed: identifiers are validated again
UPDATE anonymize.anonymize_request SET comment = 'New test, checked', phone = '+47 987 65'
WHERE comment = 'New test' RETURNING phone, comment, status;
SELECT r.code, r.message
FROM (VALUES
	($$UPDATE anonymize.anonymize_request SET phone = 'abc' WHERE comment LIKE 'New test%'$$),
	($$UPDATE anonymize.anonymize_request SET phone = NULL, email = NULL WHERE comment LIKE 'New test%'$$),
	($$UPDATE anonymize.anonymize_request SET status = 'Done' WHERE comment LIKE 'New test%'$$),
	($$UPDATE anonymize.anonymize_request SET status = 'Running' WHERE comment LIKE 'New test%'$$),
	($$UPDATE anonymize.anonymize_request SET rows_anonymized = 1 WHERE comment LIKE 'New test%'$$),
	($$UPDATE anonymize.anonymize_request SET id = id + 1000 WHERE comment LIKE 'New test%'$$),
	($$UPDATE anonymize.anonymize_request SET to_date = current_date + 7 WHERE comment LIKE 'New test%'$$)
) AS t(q), LATERAL regress.try(q) r;
SELECT phone, email, to_date, comment, status FROM anonymize.anonymize_request
WHERE comment LIKE 'New test%';

-- deleting a Waiting row cancels it
DELETE FROM anonymize.anonymize_request WHERE email IS NULL AND phone = '98765432'
RETURNING phone, status;

-- COPY is validated like INSERT: one bad line and nothing is loaded
COPY anonymize.anonymize_request (phone, email, to_date, comment) FROM STDIN;
11223344	\N	2024-01-01	copied
44x	\N	2024-01-01	bad line
\.
COPY anonymize.anonymize_request (phone, email, to_date, comment) FROM STDIN;
11223344	\N	2024-01-01	copied
\N	dave@example.com	2024-01-02	copied too
\.
SELECT phone, email, to_date, comment, status FROM anonymize.anonymize_request
WHERE comment LIKE 'copied%' ORDER BY id;
RESET SESSION AUTHORIZATION;

-- A row the run has moved on (here: restored from a dump by a superuser,
-- which may insert any status) can no longer be changed or deleted by the
-- portal: 55000.
INSERT INTO anonymize.anonymize_request (phone, to_date, comment, status, done_at, rows_anonymized)
VALUES ('****51', '2023-12-15', 'restored Done row', 'Done', now(), 3);
SET SESSION AUTHORIZATION regress_anonymize_portal;
SELECT r.code, r.message, r.detail
FROM (VALUES
	($$UPDATE anonymize.anonymize_request SET comment = 'x' WHERE comment = 'restored Done row'$$),
	($$DELETE FROM anonymize.anonymize_request WHERE comment = 'restored Done row'$$),
	($$TRUNCATE anonymize.anonymize_request$$)
) AS t(q), LATERAL regress.try(q) r;
RESET SESSION AUTHORIZATION;
-- not even a superuser edits a Done row or truncates the page
SELECT r.code, r.message
FROM (VALUES
	($$UPDATE anonymize.anonymize_request SET comment = 'x' WHERE comment = 'restored Done row'$$),
	($$DELETE FROM anonymize.anonymize_request WHERE comment = 'restored Done row'$$),
	($$TRUNCATE anonymize.anonymize_request CASCADE$$)
) AS t(q), LATERAL regress.try(q) r;
-- an explicit NULL to_date is today, like the default; an update cannot
-- blank it
INSERT INTO anonymize.anonymize_request (phone, to_date) VALUES ('22334455', NULL)
RETURNING to_date = current_date AS today;
SELECT r.code, r.message
FROM regress.try($$UPDATE anonymize.anonymize_request SET to_date = NULL WHERE phone = '22334455'$$) r;

-- the receipts: status changes with times, never an identifier
SELECT l.request_id = r.id AS same_request, l.event, l.status, l.target, l.rows,
       l.logged_at IS NOT NULL AS has_time
FROM anonymize.request_log l LEFT JOIN anonymize.anonymize_request r ON r.id = l.request_id
ORDER BY l.id;
SELECT count(*) AS log_rows_with_identifiers
FROM anonymize.request_log l
WHERE l::text ~ '(98765|555551|11223344|bob|carol|dave)';

-- PUBLIC has nothing: a role without grants cannot even see the schema
SET SESSION AUTHORIZATION regress_anonymize_nobody;
SELECT r.code, r.message
FROM (VALUES
	($$SELECT count(*) FROM anonymize.anonymize_request$$),
	($$SELECT anonymize.normalize_phone('98765432')$$),
	($$SELECT count(*) FROM anonymize.request_log$$)
) AS t(q), LATERAL regress.try(q) r;
RESET SESSION AUTHORIZATION;
SELECT count(*) AS public_grants
FROM (SELECT (aclexplode(relacl)).grantee FROM pg_class
      WHERE relnamespace = 'anonymize'::regnamespace AND relacl IS NOT NULL
      UNION ALL
      SELECT (aclexplode(proacl)).grantee FROM pg_proc
      WHERE pronamespace = 'anonymize'::regnamespace AND proacl IS NOT NULL
      UNION ALL
      SELECT (aclexplode(nspacl)).grantee FROM pg_namespace
      WHERE nspname = 'anonymize') g
WHERE grantee = 0;
SELECT proname FROM pg_proc
WHERE pronamespace = 'anonymize'::regnamespace AND proacl IS NULL;

-- "today" is the zone a session starts with (anonymize.timezone is empty
-- here, so TimeZone's reset value: postgresql.conf, ALTER DATABASE/ROLE SET,
-- or a client's PGTZ, which pg_regress sets), not a session's SET TimeZone.
-- At any instant the date in at least one of these two zones differs from
-- the reset zone's.
SET timezone = 'Pacific/Kiritimati';
SELECT anonymize._today() = (now() AT TIME ZONE (SELECT reset_val FROM pg_settings WHERE name = 'TimeZone'))::date AS server_today;
SET timezone = 'Pacific/Niue';
SELECT anonymize._today() = (now() AT TIME ZONE (SELECT reset_val FROM pg_settings WHERE name = 'TimeZone'))::date AS server_today;
RESET timezone;

-- clean up for the tests that follow (internal rows stay: they are not Waiting)
DELETE FROM anonymize.anonymize_request WHERE status = 'Waiting';
