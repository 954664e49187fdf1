/* anonymize--1.0--1.1.sql: upgrade of the anonymize extension from 1.0 to 1.1 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION anonymize UPDATE TO '1.1'" to load this file. \quit

-- Version 1.1 has no install script of its own: CREATE EXTENSION runs
-- anonymize--1.0.sql (released, never changed) and then this script, so
-- that a fresh install and an upgraded one run the same statements
-- (t/080_upgrade.pl compares the two).  Each change of 1.1 comes as a
-- section below; privileges of new objects go in their own section, as
-- in 1.0 (nothing for PUBLIC).

-- ---------------------------------------------------------------
-- Comments on the internal objects
-- ---------------------------------------------------------------

-- 1.0 explained the internal functions in the install script only; these
-- comments show in \df+ and \dd, for a DBA who meets them in a plan, a
-- trigger list or a privilege listing.

COMMENT ON FUNCTION @extschema@._request_guard() IS
'trigger on the page: checks each new or changed request, allows changing or cancelling one only while it is Waiting, and writes each status change to request_log';
COMMENT ON FUNCTION @extschema@._request_forbid_truncate() IS
'trigger on the page: refuses TRUNCATE, which would erase the record of every erasure';
COMMENT ON FUNCTION @extschema@._rewrite_recheck(text, integer) IS
'used by the run''s UPDATE: true when the row at a scanned TID still holds the request''s identifier (false outside a run)';
COMMENT ON FUNCTION @extschema@._guard_visible(text, date, "char", "char") IS
'row filter of the search guard (protect()) for a date column: false for a row the run will rewrite and has not yet';
COMMENT ON FUNCTION @extschema@._guard_visible(text, timestamp, "char", "char") IS
'row filter of the search guard (protect()) for a timestamp column: false for a row the run will rewrite and has not yet';
COMMENT ON FUNCTION @extschema@._guard_visible(text, timestamptz, "char", "char") IS
'row filter of the search guard (protect()) for a timestamptz column: false for a row the run will rewrite and has not yet';
COMMENT ON FUNCTION @extschema@._search_cache_entries() IS
'distinct digests in this backend''s search cache (tests and benchmarks)';
COMMENT ON FUNCTION @extschema@._guard_readers(regclass) IS
'the roles that may read a protected table (SELECT on it or on one of its columns), PUBLIC as role 0';
COMMENT ON FUNCTION @extschema@._guard_grants() IS
'gives EXECUTE on the guard''s row filters to exactly the roles that may read a protected table, never to PUBLIC';
COMMENT ON FUNCTION @extschema@._guard_grants_trigger() IS
'after GRANT or REVOKE: keeps the guard''s EXECUTE grants in step, and refuses to let PUBLIC read a protected table';
COMMENT ON EVENT TRIGGER anonymize_guard_grants IS
'keeps EXECUTE on the search guard''s row filters in step with who may read a protected table (anonymize._guard_grants_trigger())';
