-- Search hooks: is_anonymized() and the protect() guard, before any run.
-- (hooks_done.sql shows them after a run has finished requests.)

-- a request to match against, filed as the portal files it
INSERT INTO anonymize.anonymize_request (phone, email, to_date, comment)
VALUES ('91234567', 'Ann.Test@Example.NO', '2024-02-21', 'hooks: ann');

-- every accepted way of writing the number and the address
SELECT v AS identifier, anonymize.is_anonymized(v)
FROM unnest(ARRAY[
	'91234567', '+4791234567', '004791234567', '+47 912 34 567',
	'912 34 567', '912.34.567', '912-34-567', '+47 (912) 34-567', 'tel:+4791234567',
	'TEL:+47 912 34 567', '  91234567  ', E'\t+4791234567\n',
	'ann.test@example.no', 'Ann.Test@Example.NO', 'ANN.TEST@EXAMPLE.NO',
	'"Ann Test" <ann.test@example.no>', 'Ann <ANN.test@example.no>',
	'  ann.test@example.no ', 'mailto:ann.test@example.no']) v;

-- everything else is false, never an error; NULL in, NULL out
SELECT v AS identifier, anonymize.is_anonymized(v)
FROM unnest(ARRAY[
	'91234568', '9123456', '912345678', '+4691234567', '004691234567',
	'+91234567', '0091234567', '4791234567',
	'xann.test@example.no', 'ann.test@example.no.evil.example', 'ann.test@example',
	'ann.test', '@example.no', 'ann test@example.no',
	'', ' ', '+', '00', 'tel:', 'Anonymized', '*****567', 'a*******@e******.no',
	'91234567; DROP TABLE x', E'9123\\4567', '９１２３４５６７', NULL]) v;
SELECT anonymize.is_anonymized(repeat('9', 100000)) AS huge_digits,
       anonymize.is_anonymized(repeat('+47 ', 1000000)) AS huge_separators,
       anonymize.is_anonymized(repeat('a', 1000000) || '@example.no') AS huge_email,
       anonymize.is_anonymized('"' || repeat('x', 100000) || '" <ann.test@example.no>') AS huge_display_name,
       anonymize.is_anonymized(E'\\x00') AS nul_escape;

-- true for each status that is not final: Waiting (above), Running and
-- Held (rows restored from a dump, the way a superuser may insert any
-- status); false for Failed and for requests without the archive scope
INSERT INTO anonymize.anonymize_request (phone, to_date, comment, status)
VALUES ('92000001', '2024-01-01', 'hooks: running', 'Running'),
       ('92000002', '2024-01-01', 'hooks: held', 'Held'),
       ('92000003', '2024-01-01', 'hooks: failed', 'Failed');
INSERT INTO anonymize.anonymize_request (phone, email, archive, sms_survey, comment)
VALUES ('92000004', 'sms.only@example.no', false, true, 'hooks: sms survey only');
SELECT r.comment, r.status, r.archive, anonymize.is_anonymized(r.phone)
FROM anonymize.anonymize_request r
WHERE r.comment LIKE 'hooks:%' ORDER BY r.id;
SELECT anonymize.is_anonymized('sms.only@example.no') AS sms_only_email;

-- within one transaction: a request filed counts at once, and a rollback
-- takes it back
BEGIN;
SELECT anonymize.is_anonymized('93000001') AS before_insert;
INSERT INTO anonymize.anonymize_request (phone, comment) VALUES ('93000001', 'hooks: tx');
SELECT anonymize.is_anonymized('93000001') AS after_insert;
UPDATE anonymize.anonymize_request SET phone = '93000002' WHERE comment = 'hooks: tx';
SELECT anonymize.is_anonymized('93000001') AS old_number, anonymize.is_anonymized('93000002') AS new_number;
SAVEPOINT s;
DELETE FROM anonymize.anonymize_request WHERE comment = 'hooks: tx';
SELECT anonymize.is_anonymized('93000002') AS after_cancel;
ROLLBACK TO SAVEPOINT s;
SELECT anonymize.is_anonymized('93000002') AS after_rollback_to_savepoint;
ROLLBACK;
SELECT anonymize.is_anonymized('93000002') AS after_rollback;

-- a national number means the configured country; changing it counts at once
SET anonymize.country_code = '46';
SELECT anonymize.is_anonymized('91234567') AS national, anonymize.is_anonymized('+4791234567') AS norwegian,
       anonymize.is_anonymized('+4691234567') AS swedish;
RESET anonymize.country_code;
SELECT anonymize.is_anonymized('91234567') AS national, anonymize.is_anonymized('+4691234567') AS swedish;

-- privileges: EXECUTE is all the portal needs; it still cannot read the
-- key or the digests, and a role without the grant cannot call it
GRANT EXECUTE ON FUNCTION anonymize.is_anonymized(text) TO regress_anonymize_portal;
SELECT p.proname, p.prosecdef, p.proisstrict, p.provolatile, p.proparallel
FROM pg_proc p WHERE p.oid = 'anonymize.is_anonymized(text)'::regprocedure;
SET SESSION AUTHORIZATION regress_anonymize_portal;
SELECT anonymize.is_anonymized('+47 912 34 567') AS portal_sees, anonymize.is_anonymized('91234568') AS other;
SELECT r.code, r.message
FROM (VALUES ($$SELECT * FROM anonymize.secret$$),
             ($$SELECT * FROM anonymize.request_private$$),
             ($$SELECT anonymize._guard_visible('91234567', now(), 'a', 'p')$$)) AS t(q),
     LATERAL regress.try(q) r;
RESET SESSION AUTHORIZATION;
GRANT USAGE ON SCHEMA anonymize TO regress_anonymize_nobody;
SET SESSION AUTHORIZATION regress_anonymize_nobody;
SELECT r.code, r.message FROM regress.try($$SELECT anonymize.is_anonymized('91234567')$$) r;
RESET SESSION AUTHORIZATION;
REVOKE USAGE ON SCHEMA anonymize FROM regress_anonymize_nobody;

------------------------------------------------------------------------
-- The guard: protect() on archive tables read by the portal's role
------------------------------------------------------------------------
-- to_date is a day in anonymize.timezone (pg_regress runs in PST8PDT)
SET anonymize.timezone = 'Europe/Oslo';
CREATE ROLE regress_anonymize_owner;
CREATE SCHEMA hooks AUTHORIZATION regress_anonymize_owner;
GRANT USAGE ON SCHEMA hooks TO regress_anonymize_portal, regress_anonymize_nobody;
SET ROLE regress_anonymize_owner;
CREATE TABLE hooks.calls (id int PRIMARY KEY, caller text, queue text,
                          started_at timestamptz NOT NULL);
CREATE INDEX calls_caller_idx ON hooks.calls (caller);
CREATE TABLE hooks.chats (id int PRIMARY KEY, chatter_id varchar(200),
                          started_at timestamp);
CREATE TABLE hooks.emails (id int PRIMARY KEY, from_address text, received_on date);
CREATE TABLE hooks.sms (id int PRIMARY KEY, sender text, sent_on date);
-- Ann's contacts up to and after her to_date (2024-02-21, Europe/Oslo),
-- stored the ways a switchboard writes numbers; and other people's
INSERT INTO hooks.calls VALUES
	(1, '+4791234567',     'sales',   '2024-01-05 10:00+01'),
	(2, '004791234567',    'support', '2024-02-21 23:30+01'),	-- on to_date in Oslo
	(3, '912 34 567',      'sales',   '2024-02-21 22:59:59+00'),	-- 23:59:59 in Oslo
	(4, '+4791234567',     'sales',   '2024-02-21 23:00:00+00'),	-- 00:00 next day in Oslo
	(5, 'tel:+4791234567', 'support', '2024-03-01 09:00+01'),
	(6, '+4798765432',     'sales',   '2024-01-05 11:00+01'),
	(7, '+4691234567',     'sales',   '2024-01-05 12:00+01'),	-- same digits, Sweden
	(8, NULL,              'sales',   '2024-01-05 13:00+01'),
	(9, 'unknown',         'support', '2024-01-05 14:00+01'),
	(10, 'ann.test@example.no', 'support', '2024-01-05 15:00+01');	-- not a phone
INSERT INTO hooks.chats VALUES
	(1, 'ann.test@example.no', '2024-02-21 23:59'),
	(2, '91234567',            '2024-02-20 10:00'),
	(3, 'ann.test@example.no', '2024-02-22 00:00'),
	(4, 'bo@example.no',       '2024-02-01 10:00'),
	(5, 'ann.test@example.no', NULL);
INSERT INTO hooks.sms VALUES
	(1, '+4791234567', '2024-01-01'),		-- Ann: her request is for the archive only
	(2, '+4792000004', '2024-01-01');		-- a request for the SMS survey only
INSERT INTO hooks.emails VALUES
	(1, '"Ann" <Ann.Test@example.no>', '2024-02-21'),
	(2, 'ann.test@example.no',         '2024-02-22'),
	(3, 'bo@example.no',               '2024-02-01');
GRANT SELECT ON hooks.calls, hooks.chats, hooks.sms TO regress_anonymize_portal;
GRANT SELECT (id, from_address, received_on) ON hooks.emails TO regress_anonymize_portal;
RESET ROLE;

-- only a registered target can be protected
SELECT r.code, r.message, r.hint FROM regress.try($$SELECT anonymize.protect('hooks.calls')$$) r;
SELECT anonymize.add_target('hooks.calls', 'caller', 'phone', 'archive', 'started_at');
SELECT anonymize.add_target('hooks.chats', 'chatter_id', 'phone_or_email', 'archive', 'started_at');
SELECT anonymize.add_target('hooks.emails', 'from_address', 'email', 'archive', 'received_on');
SELECT anonymize.add_target('hooks.sms', 'sender', 'phone', 'sms_survey', 'sent_on');
SELECT anonymize.protect('hooks.calls');
SELECT anonymize.protect('hooks.sms');
SELECT anonymize.protect('hooks.chats');
SELECT anonymize.protect('hooks.emails');
SELECT anonymize.protect('hooks.calls');	-- again: the same guard
SELECT c.relname, c.relrowsecurity, p.polname, p.polpermissive, p.polcmd,
       pg_get_expr(p.polqual, p.polrelid) AS using
FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
WHERE c.relnamespace = 'hooks'::regnamespace ORDER BY c.relname, p.polname;

-- the roles that may read a protected table, and only they, may run the
-- guard's function: the policy needs it, and nothing is granted to PUBLIC
SELECT p.oid::regprocedure AS guard, array_agg(r.rolname ORDER BY r.rolname) AS may_execute
FROM pg_proc p, LATERAL aclexplode(p.proacl) a JOIN pg_roles r ON r.oid = a.grantee
WHERE p.proname = '_guard_visible' AND a.grantee <> p.proowner
GROUP BY p.oid ORDER BY 1::text;

-- the portal, subject to row-level security: a search by number finds
-- nothing up to to_date (rows 1-3), whatever the format; rows after it (4, 5)
-- are found as before
SET SESSION AUTHORIZATION regress_anonymize_portal;
SELECT id, caller, queue FROM hooks.calls WHERE caller = '+4791234567' ORDER BY id;
SELECT id, caller, queue FROM hooks.calls WHERE caller LIKE '%912%34%567' ORDER BY id;
-- a search by queue does not show Ann's rows up to to_date either
SELECT id, caller FROM hooks.calls WHERE queue = 'sales' ORDER BY id;
SELECT id, caller FROM hooks.calls WHERE queue = 'support' ORDER BY id;
-- a search by email, in chats (timestamp) and emails (date)
SELECT id, chatter_id, started_at FROM hooks.chats ORDER BY id;
SELECT id, from_address, received_on FROM hooks.emails WHERE lower(from_address) LIKE '%ann.test%' ORDER BY id;
SELECT id, from_address, received_on FROM hooks.emails ORDER BY id;
-- the SMS survey's guard hides what requests for the SMS survey will rewrite
SELECT id, sender FROM hooks.sms ORDER BY id;
-- the portal's answer before it searches at all
SELECT anonymize.is_anonymized('004791234567') AS ask_first;
-- an equality search on the identifier keeps its index under the guard
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT * FROM hooks.calls WHERE caller = '+4791234567';
RESET enable_seqscan;
RESET SESSION AUTHORIZATION;

-- the owner and superusers see every row, as with any row-level security
SELECT count(*) AS superuser_sees FROM hooks.calls;
SET ROLE regress_anonymize_owner;
SELECT count(*) AS owner_sees FROM hooks.calls;
RESET ROLE;

-- a role granted SELECT later can query at once (the grant of the guard
-- follows); one without SELECT is refused by the table's own privileges
SET SESSION AUTHORIZATION regress_anonymize_nobody;
SELECT r.code, r.message FROM regress.try($$SELECT count(*) FROM hooks.calls$$) r;
RESET SESSION AUTHORIZATION;
SET ROLE regress_anonymize_owner;
GRANT SELECT ON hooks.calls TO regress_anonymize_nobody;
RESET ROLE;
SET SESSION AUTHORIZATION regress_anonymize_nobody;
SELECT array_agg(id ORDER BY id) AS nobody_sees FROM hooks.calls;
RESET SESSION AUTHORIZATION;
SET ROLE regress_anonymize_owner;
REVOKE SELECT ON hooks.calls FROM regress_anonymize_nobody;
-- PUBLIC cannot be given a protected table: it would need the guard
SELECT r.code, r.message, r.hint FROM regress.try($$GRANT SELECT ON hooks.calls TO PUBLIC$$) r;
RESET ROLE;
SELECT count(*) AS nobody_may_execute
FROM pg_proc p, LATERAL aclexplode(p.proacl) a
WHERE p.proname = '_guard_visible' AND a.grantee = 'regress_anonymize_nobody'::regrole;

-- a request cancelled in another transaction shows the rows again
DELETE FROM anonymize.anonymize_request WHERE comment = 'hooks: ann';
SET SESSION AUTHORIZATION regress_anonymize_portal;
SELECT array_agg(id ORDER BY id) AS after_cancel FROM hooks.calls;
RESET SESSION AUTHORIZATION;
INSERT INTO anonymize.anonymize_request (phone, email, to_date, comment)
VALUES ('91234567', 'Ann.Test@Example.NO', '2024-02-21', 'hooks: ann');
SET SESSION AUTHORIZATION regress_anonymize_portal;
SELECT array_agg(id ORDER BY id) AS filed_again FROM hooks.calls;
RESET SESSION AUTHORIZATION;

-- unprotect() takes the guard off and leaves row-level security as found;
-- a table with its own policies keeps them and is not opened up
SELECT anonymize.unprotect('hooks.emails');
SELECT relrowsecurity, (SELECT count(*) FROM pg_policy WHERE polrelid = c.oid) AS policies
FROM pg_class c WHERE c.oid = 'hooks.emails'::regclass;
SET ROLE regress_anonymize_owner;
ALTER TABLE hooks.emails ENABLE ROW LEVEL SECURITY;
CREATE POLICY only_bo ON hooks.emails USING (from_address = 'bo@example.no');
RESET ROLE;
SELECT anonymize.protect('hooks.emails');
SET SESSION AUTHORIZATION regress_anonymize_portal;
SELECT id, from_address FROM hooks.emails ORDER BY id;
RESET SESSION AUTHORIZATION;
SELECT anonymize.unprotect('hooks.emails');
SELECT polname FROM pg_policy WHERE polrelid = 'hooks.emails'::regclass;
SELECT relrowsecurity FROM pg_class WHERE oid = 'hooks.emails'::regclass;
SELECT r.code, r.message, r.hint
FROM (VALUES ($$SELECT anonymize.unprotect('hooks.emails')$$),
             ($$SELECT anonymize.protect(NULL)$$)) AS t(q),
     LATERAL regress.try(q) r;
SET SESSION AUTHORIZATION regress_anonymize_portal;
SELECT r.code, r.message FROM regress.try($$SELECT anonymize.protect('hooks.calls')$$) r;
RESET SESSION AUTHORIZATION;
