-- add_target() checks what the run will write: every target the run could
-- not erase is refused at registration, with its SQLSTATE, the reason and
-- the way out (erase => 'null', a per-target replacement, another column),
-- and nothing is registered.  Then the targets view: how each target is
-- erased, the tables the run scans, the triggers and what the run does
-- with them, the materialized views that copy it.
CREATE SCHEMA chk;
CREATE DOMAIN chk.digits AS text CHECK (VALUE ~ '^[0-9+ ]+$');
CREATE DOMAIN chk.short AS varchar(5);
CREATE DOMAIN chk.required AS text NOT NULL;
CREATE TABLE chk.numbers (number text PRIMARY KEY);
CREATE TABLE chk.calls (
	id			int,
	caller		text,
	short		varchar(5),
	fixed		char(8),
	num			bigint,
	dec			numeric,
	uniq		text UNIQUE,
	nnd			text UNIQUE NULLS NOT DISTINCT,
	uidx		text,
	lidx		text,
	checked		text CHECK (checked ~ '^[0-9+ ]*$'),
	mandatory	text NOT NULL DEFAULT '',
	pair		text,
	dom			chk.digits,
	dshort		chk.short,
	dreq		chk.required DEFAULT '',
	fk			text REFERENCES chk.numbers,
	at			timestamptz NOT NULL,
	CHECK (pair IS NOT NULL OR caller IS NOT NULL)
);
CREATE UNIQUE INDEX ON chk.calls (uidx);
CREATE UNIQUE INDEX ON chk.calls (lower(lidx));
CREATE TABLE chk.byphone (number text, at date NOT NULL) PARTITION BY LIST (number);
CREATE TABLE chk.byphone_a PARTITION OF chk.byphone DEFAULT;
-- an inheritance tree with a foreign child, and one whose child has its own
-- unique index
CREATE FOREIGN DATA WRAPPER chk_fdw;
CREATE SERVER chk_server FOREIGN DATA WRAPPER chk_fdw;
CREATE TABLE chk.legacy (number text, at date NOT NULL);
CREATE FOREIGN TABLE chk.legacy_remote () INHERITS (chk.legacy) SERVER chk_server;
CREATE TABLE chk.tree (number text, at date NOT NULL);
CREATE TABLE chk.tree_2023 (UNIQUE (number)) INHERITS (chk.tree);
-- triggers and rules that would fire in the run
CREATE TABLE chk.mails (sender text, at date NOT NULL);
CREATE TABLE chk.mails_audit (sender text);
CREATE FUNCTION chk.audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO chk.mails_audit VALUES (OLD.sender);
	RETURN NEW;
END
$$;
CREATE TRIGGER mails_audit BEFORE UPDATE ON chk.mails FOR EACH ROW EXECUTE FUNCTION chk.audit();
CREATE TABLE chk.always (LIKE chk.mails);
CREATE TRIGGER always_audit AFTER UPDATE ON chk.always FOR EACH ROW EXECUTE FUNCTION chk.audit();
ALTER TABLE chk.always ENABLE ALWAYS TRIGGER always_audit;
CREATE TABLE chk.replica (LIKE chk.mails);
CREATE TRIGGER replica_audit BEFORE UPDATE OF sender ON chk.replica FOR EACH ROW EXECUTE FUNCTION chk.audit();
ALTER TABLE chk.replica ENABLE REPLICA TRIGGER replica_audit;
CREATE TABLE chk.ruled (LIKE chk.mails);
CREATE RULE ruled_audit AS ON UPDATE TO chk.ruled DO ALSO INSERT INTO chk.mails_audit VALUES (OLD.sender);
ALTER TABLE chk.ruled ENABLE ALWAYS RULE ruled_audit;

SELECT q, r.code, r.message, r.hint
FROM (VALUES
	-- the replacement does not fit
	($$SELECT anonymize.add_target('chk.calls', 'short', 'phone', 'archive', 'at')$$),
	($$SELECT anonymize.add_target('chk.calls', 'dshort', 'phone', 'archive', 'at')$$),
	($$SELECT anonymize.add_target('chk.calls', 'fixed', 'phone', 'archive', 'at', replacement => '123456789')$$),
	-- numbers: only set to NULL, and only phone numbers
	($$SELECT anonymize.add_target('chk.calls', 'num', 'phone', 'archive', 'at')$$),
	($$SELECT anonymize.add_target('chk.calls', 'dec', 'phone_or_email', 'archive', 'at', erase => 'null')$$),
	($$SELECT anonymize.add_target('chk.calls', 'at', 'phone', 'archive', 'at', erase => 'null')$$),
	-- two erased rows would collide
	($$SELECT anonymize.add_target('chk.numbers', 'number', 'phone', 'archive', 'number')$$),
	($$SELECT anonymize.add_target('chk.calls', 'uniq', 'phone', 'archive', 'at')$$),
	($$SELECT anonymize.add_target('chk.calls', 'nnd', 'phone', 'archive', 'at', erase => 'null')$$),
	($$SELECT anonymize.add_target('chk.calls', 'uidx', 'phone', 'archive', 'at')$$),
	($$SELECT anonymize.add_target('chk.calls', 'lidx', 'email', 'archive', 'at')$$),
	($$SELECT anonymize.add_target('chk.tree', 'number', 'phone', 'archive', 'at')$$),
	-- CHECK constraints and domains that refuse what the run writes
	($$SELECT anonymize.add_target('chk.calls', 'checked', 'phone', 'archive', 'at')$$),
	($$SELECT anonymize.add_target('chk.calls', 'caller', 'phone', 'archive', 'at', erase => 'null')$$),
	($$SELECT anonymize.add_target('chk.calls', 'dom', 'phone', 'archive', 'at')$$),
	($$SELECT anonymize.add_target('chk.calls', 'dreq', 'phone', 'archive', 'at', erase => 'null')$$),
	-- NULL into NOT NULL
	($$SELECT anonymize.add_target('chk.calls', 'mandatory', 'phone', 'archive', 'at', erase => 'null')$$),
	-- a foreign key is not checked by a run that fires no trigger
	($$SELECT anonymize.add_target('chk.calls', 'fk', 'phone', 'archive', 'at')$$),
	-- a partition key would move the row
	($$SELECT anonymize.add_target('chk.byphone', 'number', 'phone', 'archive', 'at')$$),
	-- a foreign child cannot be rewritten in place
	($$SELECT anonymize.add_target('chk.legacy', 'number', 'phone', 'archive', 'at')$$),
	-- triggers and rules that fire in replica mode
	($$SELECT anonymize.add_target('chk.always', 'sender', 'email', 'archive', 'at')$$),
	($$SELECT anonymize.add_target('chk.replica', 'sender', 'email', 'archive', 'at')$$),
	($$SELECT anonymize.add_target('chk.ruled', 'sender', 'email', 'archive', 'at')$$),
	-- the arguments themselves
	($$SELECT anonymize.add_target('chk.calls', 'caller', 'phone', 'archive', 'at', erase => 'delete')$$),
	($$SELECT anonymize.add_target('chk.calls', 'caller', 'phone', 'archive', 'at', erase => 'null', replacement => 'x')$$),
	($$SELECT anonymize.add_target('chk.calls', 'caller', 'phone', 'archive', 'at', erase => NULL)$$)
) AS t(q), LATERAL regress.try(q) r;
SELECT count(*) AS registered FROM anonymize.target WHERE tbl::text LIKE 'chk.%';

-- the details say why, the way out is in the hint
SELECT r.code, r.message, r.detail, r.hint
FROM regress.try($$SELECT anonymize.add_target('chk.always', 'sender', 'email', 'archive', 'at')$$) r;
SELECT r.code, r.message, r.detail
FROM regress.try($$SELECT anonymize.add_target('chk.calls', 'short', 'phone', 'archive', 'at')$$) r;

-- the ways out, accepted
SELECT anonymize.add_target('chk.calls', 'short', 'phone', 'archive', 'at', replacement => 'anon');
SELECT anonymize.add_target('chk.calls', 'fixed', 'phone', 'archive', 'at', erase => 'null');
SELECT anonymize.add_target('chk.calls', 'num', 'phone', 'archive', 'at', erase => 'null');
SELECT anonymize.add_target('chk.calls', 'dec', 'phone', 'archive', 'at', erase => 'null');
SELECT anonymize.add_target('chk.calls', 'uniq', 'phone', 'archive', 'at', erase => 'null');
SELECT anonymize.add_target('chk.calls', 'checked', 'phone', 'archive', 'at', replacement => '0');
SELECT anonymize.add_target('chk.calls', 'dom', 'phone', 'archive', 'at', replacement => '+');
SELECT anonymize.add_target('chk.calls', 'caller', 'phone', 'archive', 'at');
SELECT anonymize.add_target('chk.calls', 'mandatory', 'phone', 'archive', 'at');
SELECT anonymize.add_target('chk.mails', 'sender', 'email', 'archive', 'at');
-- made ordinary again, the trigger and the rule are accepted: not fired
ALTER TABLE chk.always ENABLE TRIGGER always_audit;
SELECT anonymize.add_target('chk.always', 'sender', 'email', 'archive', 'at');
ALTER TABLE chk.ruled ENABLE RULE ruled_audit;
SELECT anonymize.add_target('chk.ruled', 'sender', 'email', 'archive', 'at');
-- a nullable time column is noted
CREATE TABLE chk.undated (number text, at timestamp);
SELECT anonymize.add_target('chk.undated', 'number', 'phone', 'archive', 'at');

SELECT tbl, col, kind, erase, replacement, partitioned, inherited, tables, time_nullable
FROM anonymize.targets WHERE tbl::text LIKE 'chk.%' ORDER BY tbl::text, col;
SELECT tbl, col, triggers FROM anonymize.targets
WHERE tbl::text LIKE 'chk.%' AND triggers <> '{}' ORDER BY tbl::text, col;

-- re-registering changes erase and replacement in place
SELECT anonymize.add_target('chk.calls', 'caller', 'phone', 'archive', 'at', replacement => 'gone');
SELECT erase, replacement FROM anonymize.targets WHERE tbl = 'chk.calls'::regclass AND col = 'caller';
SELECT anonymize.add_target('chk.calls', 'caller', 'phone', 'archive', 'at');
SELECT erase, replacement FROM anonymize.targets WHERE tbl = 'chk.calls'::regclass AND col = 'caller';

-- an inheritance tree: the view counts the tables the run scans
CREATE TABLE chk.legacy2 (number text, at date NOT NULL);
CREATE TABLE chk.legacy2_a () INHERITS (chk.legacy2);
CREATE TABLE chk.legacy2_a1 () INHERITS (chk.legacy2_a);
SELECT anonymize.add_target('chk.legacy2', 'number', 'phone', 'archive', 'at');
CREATE TABLE chk.legacy2_b () INHERITS (chk.legacy2);
SELECT tbl, partitioned, inherited, tables FROM anonymize.targets WHERE tbl = 'chk.legacy2'::regclass;
-- a child of a registered parent is covered by it
SELECT r.code, r.message
FROM regress.try($$SELECT anonymize.add_target('chk.legacy2_a1', 'number', 'phone', 'archive', 'at')$$) r;

-- materialized views that copy a target, directly or through a view
CREATE MATERIALIZED VIEW chk.mails_mv AS SELECT sender FROM chk.mails;
CREATE VIEW chk.mails_v AS SELECT sender, at FROM chk.mails;
CREATE MATERIALIZED VIEW chk.mails_v_mv AS SELECT count(*) AS n, max(sender) AS last FROM chk.mails_v;
CREATE MATERIALIZED VIEW chk.mails_mv_mv AS SELECT * FROM chk.mails_mv;
SELECT tbl, materialized_views FROM anonymize.targets WHERE tbl = 'chk.mails'::regclass;

SELECT count(anonymize.remove_target(tbl, col)) AS removed FROM anonymize.target WHERE tbl::text LIKE 'chk.%';
SET client_min_messages = warning;
DROP SCHEMA chk CASCADE;
DROP SERVER chk_server;
DROP FOREIGN DATA WRAPPER chk_fdw;
RESET client_min_messages;
