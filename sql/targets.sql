-- Targets: add_target(), remove_target() and the targets view.  Every
-- mistake fails at registration with its own SQLSTATE and a hint, and
-- nothing is registered.
CREATE SCHEMA archive;
CREATE TABLE archive.calls (id bigserial PRIMARY KEY, caller text, queue text,
                            started_at timestamptz NOT NULL);
CREATE TABLE archive.chats (id bigserial PRIMARY KEY, chatter_id varchar(200),
                            started_at timestamp);
CREATE TABLE archive.emails (id bigserial PRIMARY KEY, from_address char(100),
                             received_on date, size int);
CREATE TABLE archive.events (id bigserial, number text, at timestamptz NOT NULL)
	PARTITION BY RANGE (at);
CREATE TABLE archive.events_2023 PARTITION OF archive.events
	FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
CREATE VIEW archive.calls_view AS SELECT * FROM archive.calls;

SELECT anonymize.add_target('archive.calls', 'caller', 'phone', 'archive', 'started_at');
SELECT anonymize.add_target('archive.chats', 'chatter_id', 'phone_or_email', 'archive', 'started_at');
SELECT anonymize.add_target('archive.emails', 'from_address', 'email', 'archive', 'received_on');
SELECT anonymize.add_target('archive.events', 'number', 'phone', 'raw_data', 'at');
SELECT tbl, col, kind, scope, time_col, partitioned, added_by FROM anonymize.targets ORDER BY tbl::text;

SELECT q, r.code, r.message, r.hint
FROM (VALUES
	($$SELECT anonymize.add_target('archive.nosuch', 'caller', 'phone', 'archive', 'started_at')$$),
	($$SELECT anonymize.add_target('archive.calls', 'nosuch', 'phone', 'archive', 'started_at')$$),
	($$SELECT anonymize.add_target('archive.calls', 'caller', 'phone', 'archive', 'nosuch')$$),
	($$SELECT anonymize.add_target('archive.calls', 'id', 'phone', 'archive', 'started_at')$$),
	($$SELECT anonymize.add_target('archive.calls', 'caller', 'phone', 'archive', 'queue')$$),
	($$SELECT anonymize.add_target('archive.emails', 'from_address', 'email', 'archive', 'size')$$),
	($$SELECT anonymize.add_target('archive.calls', 'caller', 'fax', 'archive', 'started_at')$$),
	($$SELECT anonymize.add_target('archive.calls', 'caller', 'phone', 'everything', 'started_at')$$),
	($$SELECT anonymize.add_target('archive.calls_view', 'caller', 'phone', 'archive', 'started_at')$$),
	($$SELECT anonymize.add_target('archive.events_2023', 'number', 'phone', 'raw_data', 'at')$$),
	($$SELECT anonymize.add_target('archive.calls', 'caller', NULL, 'archive', 'started_at')$$),
	($$SELECT anonymize.remove_target('archive.calls', 'queue')$$)
) AS t(q), LATERAL regress.try(q) r;
SELECT count(*) AS targets FROM anonymize.targets;

-- re-registering changes the kind and scope in place
SELECT anonymize.add_target('archive.calls', 'caller', 'phone_or_email', 'archive', 'started_at');
SELECT anonymize.add_target('archive.calls', 'caller', 'phone', 'archive', 'started_at');
SELECT tbl, col, kind FROM anonymize.targets WHERE tbl = 'archive.calls'::regclass;

SELECT anonymize.remove_target('archive.emails', 'from_address');
SELECT tbl, col FROM anonymize.targets ORDER BY tbl::text;
SELECT anonymize.add_target('archive.emails', 'from_address', 'email', 'archive', 'received_on');

-- the portal's role cannot register targets
SET SESSION AUTHORIZATION regress_anonymize_portal;
SELECT r.code, r.message FROM regress.try($$SELECT anonymize.add_target('pg_catalog.pg_class', 'relname', 'phone', 'archive', 'started_at')$$) r;
RESET SESSION AUTHORIZATION;
