-- privileges: the README's GRANT recipes for a portal role and a read-only
-- auditor give each exactly its job; PUBLIC gets nothing; every SECURITY
-- DEFINER function pins search_path; nobody but the owner reads the key
-- behind the keyed digests, not through a view and not by planting objects
-- on a SECURITY DEFINER function's search_path.
SET client_min_messages = warning;
DO $$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'regress_anonymize_auditor') THEN
		CREATE ROLE regress_anonymize_auditor LOGIN;
	END IF;
END
$$;
CREATE SCHEMA privt;
CREATE TABLE privt.calls (id int PRIMARY KEY, caller text, started_at timestamptz NOT NULL);
INSERT INTO privt.calls VALUES (1, '98765432', '2024-01-10 12:00+01'),
	(2, '+47 987 65 432', '2024-01-11 12:00+01'), (3, '91234567', '2024-01-12 12:00+01');
SELECT count(*) AS added FROM (SELECT anonymize.add_target('privt.calls', 'caller', 'phone', 'archive', 'started_at')) s;
RESET client_min_messages;

-- The recipes, exactly as README.md "Privileges" gives them (the portal's
-- USAGE and page grants are in setup.sql).  wake() and is_anonymized()
-- come with the worker and the search hooks: 42883 until those are in.
SELECT q, (regress.try(q)).code FROM (VALUES
	('GRANT USAGE ON SCHEMA anonymize TO regress_anonymize_portal'),
	('GRANT SELECT, INSERT, UPDATE, DELETE ON anonymize.anonymize_request TO regress_anonymize_portal'),
	('GRANT EXECUTE ON FUNCTION anonymize.preview(bigint) TO regress_anonymize_portal'),
	('GRANT EXECUTE ON FUNCTION anonymize.wake() TO regress_anonymize_portal'),
	('GRANT EXECUTE ON FUNCTION anonymize.is_anonymized(text) TO regress_anonymize_portal'),
	('GRANT USAGE ON SCHEMA privt TO regress_anonymize_portal'),
	('GRANT SELECT ON privt.calls TO regress_anonymize_portal'),
	('GRANT USAGE ON SCHEMA anonymize TO regress_anonymize_auditor'),
	('GRANT SELECT ON anonymize.anonymize_request, anonymize.request_log, anonymize.runs, anonymize.targets TO regress_anonymize_auditor')
) AS recipe(q);

INSERT INTO anonymize.anonymize_request (phone, to_date, comment)
VALUES ('98765432', '2024-06-01', 'privileges');

-- What each role may do: 'ok', or the SQLSTATE it gets.
CREATE TEMP TABLE attempts (n int, q text);
GRANT SELECT ON attempts TO PUBLIC;
INSERT INTO attempts VALUES
	(1, 'SELECT count(*) FROM anonymize.anonymize_request'),
	(2, 'INSERT INTO anonymize.anonymize_request (phone, comment) VALUES (''40000000'', ''try'')'),
	(3, 'UPDATE anonymize.anonymize_request SET comment = ''x'' WHERE comment = ''try'''),
	(4, 'DELETE FROM anonymize.anonymize_request WHERE comment = ''x'''),
	(5, 'SELECT count(*) FROM anonymize.preview((SELECT id FROM anonymize.anonymize_request WHERE comment = ''privileges''))'),
	(6, 'SELECT count(*) FROM privt.calls'),
	(7, 'SELECT count(*) FROM anonymize.request_log'),
	(8, 'SELECT count(*) FROM anonymize.runs'),
	(9, 'SELECT count(*) FROM anonymize.targets'),
	(10, 'SELECT key FROM anonymize.secret'),
	(11, 'SELECT count(*) FROM anonymize.request_private'),
	(12, 'SELECT count(*) FROM anonymize.target'),
	(13, 'SELECT count(*) FROM anonymize.run_log'),
	(14, 'SELECT anonymize.run()'),
	(15, 'SELECT anonymize.confirm((SELECT id FROM anonymize.anonymize_request WHERE comment = ''privileges''))'),
	(16, 'SELECT anonymize.add_target(''privt.calls'', ''caller'', ''phone'', ''raw_data'', ''started_at'')'),
	(17, 'SELECT anonymize.remove_target(''privt.calls'', ''caller'')'),
	(18, 'TRUNCATE anonymize.anonymize_request'),
	(19, 'UPDATE anonymize.anonymize_request SET status = ''Done'' WHERE comment = ''privileges'''),
	(20, 'SELECT anonymize.normalize_phone(''98765432'')'),
	(21, 'SELECT anonymize._rewrite_recheck(''98765432'', 1)'),
	(22, 'INSERT INTO anonymize.request_log (request_id, event) VALUES (1, ''cancelled'')'),
	(23, 'SELECT nextval(''anonymize.request_log_id_seq'')');

CREATE FUNCTION regress.try_as(r text, q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE c text;
BEGIN
	EXECUTE format('SET LOCAL ROLE %I', r);
	c := (regress.try(q)).code;
	RESET ROLE;
	RETURN c;
END
$$;
SELECT n, q,
	   regress.try_as('regress_anonymize_portal', q) AS portal,
	   regress.try_as('regress_anonymize_auditor', q) AS auditor,
	   regress.try_as('regress_anonymize_nobody', q) AS nobody
FROM attempts ORDER BY n;

-- PUBLIC holds no privilege on anything of the extension
WITH ext AS (SELECT oid FROM pg_extension WHERE extname = 'anonymize'),
members AS (
	SELECT classid, objid FROM pg_depend, ext
	WHERE refclassid = 'pg_extension'::regclass AND refobjid = ext.oid AND deptype = 'e'
),
acls AS (
	SELECT m.classid, m.objid,
		   coalesce(c.relacl, acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::"char", c.relowner)) AS acl
	FROM members m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid
	UNION ALL
	SELECT m.classid, m.objid, coalesce(p.proacl, acldefault('f'::"char", p.proowner))
	FROM members m JOIN pg_proc p ON m.classid = 'pg_proc'::regclass AND p.oid = m.objid
	UNION ALL
	SELECT m.classid, m.objid, coalesce(t.typacl, acldefault('T'::"char", t.typowner))
	FROM members m JOIN pg_type t ON m.classid = 'pg_type'::regclass AND t.oid = m.objid
	-- not a table's or view's row type nor an array type: they follow their
	-- relation or element type (17 and later list them as members too)
	WHERE NOT EXISTS (SELECT FROM pg_class r WHERE r.oid = t.typrelid AND r.relkind <> 'c')
	  AND NOT EXISTS (SELECT FROM pg_type e WHERE e.typarray = t.oid)
	UNION ALL
	SELECT 'pg_namespace'::regclass, n.oid, coalesce(n.nspacl, acldefault('n'::"char", n.nspowner))
	FROM pg_namespace n WHERE n.nspname = 'anonymize'
)
SELECT pg_describe_object(classid, objid, 0) AS object, x.privilege_type
FROM acls, aclexplode(acl) x
WHERE x.grantee = 0
ORDER BY 1, 2;

-- every SECURITY DEFINER function of the extension pins search_path
SELECT p.oid::regprocedure AS function, p.proconfig
FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
  AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'anonymize')
  AND p.prosecdef
ORDER BY p.oid::regprocedure::text COLLATE "C";
SELECT count(*) AS definer_functions_not_pinned
FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
  AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'anonymize')
  AND p.prosecdef
  AND p.proconfig IS DISTINCT FROM '{"search_path=pg_catalog, pg_temp"}';

-- Planting objects on the search_path.  The portal owns a schema (say a
-- careless DBA gave it one) and fills it with look-alikes of what a
-- SECURITY DEFINER function might call unqualified: functions and
-- operators that copy the key into the portal's own table when run with
-- the definer's rights.
CREATE SCHEMA regress_evil AUTHORIZATION regress_anonymize_portal;
SET ROLE regress_anonymize_portal;
CREATE TABLE regress_evil.loot (what text, key bytea);
CREATE FUNCTION regress_evil.steal(what text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO regress_evil.loot SELECT what, s.key FROM anonymize.secret s;
EXCEPTION WHEN insufficient_privilege THEN
	INSERT INTO regress_evil.loot VALUES (what, NULL);
END
$$;
CREATE FUNCTION regress_evil.clock_timestamp() RETURNS timestamptz LANGUAGE plpgsql AS $$
BEGIN PERFORM regress_evil.steal('clock_timestamp'); RETURN pg_catalog.clock_timestamp(); END $$;
CREATE FUNCTION regress_evil.now() RETURNS timestamptz LANGUAGE plpgsql AS $$
BEGIN PERFORM regress_evil.steal('now'); RETURN pg_catalog.now(); END $$;
CREATE FUNCTION regress_evil.int8eq(bigint, bigint) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN PERFORM regress_evil.steal('= (bigint, bigint)'); RETURN pg_catalog.int8eq($1, $2); END $$;
CREATE OPERATOR regress_evil.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = regress_evil.int8eq);
CREATE FUNCTION regress_evil.texteq(text, text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN PERFORM regress_evil.steal('= (text, text)'); RETURN pg_catalog.texteq($1, $2); END $$;
CREATE OPERATOR regress_evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = regress_evil.texteq);
-- a view of the key: created, but reading it needs the view owner's rights
SELECT (regress.try('CREATE VIEW regress_evil.key_view AS SELECT key FROM anonymize.secret')).code AS create_view;
SELECT (regress.try('SELECT * FROM regress_evil.key_view')).code AS read_view;
-- the look-alikes are live on the portal's path: its own query calls one,
-- with its own rights, which cannot read the key
SET search_path = regress_evil, pg_catalog;
SELECT count(*) FROM privt.calls WHERE id::bigint = 1::bigint;
SELECT DISTINCT what, key IS NOT NULL AS got_the_key FROM regress_evil.loot ORDER BY what;
DELETE FROM regress_evil.loot;
-- now through every SECURITY DEFINER path the portal has: the page's
-- trigger (insert, update, delete) and preview()
INSERT INTO anonymize.anonymize_request (phone, comment) VALUES ('40000000', 'evil');
UPDATE anonymize.anonymize_request SET comment = 'evil2' WHERE comment = 'evil';
DELETE FROM anonymize.anonymize_request WHERE comment = 'evil2';
SELECT target, col, rows FROM anonymize.preview(
	(SELECT id FROM anonymize.anonymize_request WHERE comment OPERATOR(pg_catalog.=) 'privileges'));
-- the key was never read with the definer's rights
SELECT count(*) AS key_copies FROM regress_evil.loot WHERE key IS NOT NULL;
RESET search_path;
RESET ROLE;

-- a control: the same planted objects under a definer function that does
-- NOT pin search_path do get the key; so the test above could fail
CREATE FUNCTION regress.unpinned_lookup(id bigint) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
	RETURN (SELECT r.comment FROM anonymize.anonymize_request r WHERE r.id = unpinned_lookup.id);
END
$$;
GRANT EXECUTE ON FUNCTION regress.unpinned_lookup(bigint) TO regress_anonymize_portal;
SELECT count(*) AS keys FROM anonymize.secret;  -- the run tests made it
DELETE FROM regress_evil.loot;
SET ROLE regress_anonymize_portal;
SET search_path = regress_evil, pg_catalog;
SELECT regress.unpinned_lookup(
	(SELECT id FROM anonymize.anonymize_request WHERE comment OPERATOR(pg_catalog.=) 'privileges'));
SELECT DISTINCT what, key IS NOT NULL AS got_the_key FROM regress_evil.loot ORDER BY what;
RESET search_path;
RESET ROLE;

-- clean up
DROP FUNCTION regress.unpinned_lookup(bigint);
DROP SCHEMA regress_evil CASCADE;
DELETE FROM anonymize.anonymize_request WHERE comment = 'privileges';
SELECT count(*) AS removed FROM (SELECT anonymize.remove_target('privt.calls', 'caller')) s;
