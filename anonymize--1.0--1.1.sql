\echo Use "ALTER EXTENSION anonymize UPDATE TO '1.1'" to load this file. \quit

-- ---------------------------------------------------------------
-- The workers: one per database served
-- ---------------------------------------------------------------

-- status() also names the database whose worker it describes (this one
-- when anonymize.database serves it, else NULL).  A new OUT column needs
-- a new function: the grants of status() are given again after the
-- update (nothing is granted to PUBLIC, as in a fresh install).
DROP FUNCTION @extschema@.status();
CREATE FUNCTION @extschema@.status(
	OUT worker_pid integer,
	OUT worker_state text,
	OUT database text,
	OUT enabled boolean,
	OUT run_at text,
	OUT next_run timestamptz,
	OUT wake_pending boolean,
	OUT activity text,
	OUT last_trigger text,
	OUT last_started timestamptz,
	OUT last_finished timestamptz,
	OUT last_outcome text,
	OUT last_requests_done bigint,
	OUT last_requests_held bigint,
	OUT last_requests_failed bigint,
	OUT last_rows_rewritten bigint,
	OUT worker_database text)
RETURNS record
AS 'MODULE_PATHNAME', 'anonymize_status'
LANGUAGE C VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;	-- reads worker_state
COMMENT ON FUNCTION @extschema@.status() IS
'the background worker of this database: the database it serves, state, next scheduled run, current activity and last run';
REVOKE ALL ON FUNCTION @extschema@.status() FROM PUBLIC;

COMMENT ON FUNCTION @extschema@.wake() IS
'asks the background worker of this database to run now (also when anonymize.enabled is off); SQLSTATE 55000 when it is not loaded or anonymize.database does not serve this database';
