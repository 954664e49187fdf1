-- setup: what the other regression tests share.  Runs first.
--
-- regress.try(sql) runs a statement and returns its SQLSTATE and error
-- text (or 'ok'), so that a test can show many rejected values in one
-- table.  Roles: a portal role with the README's grants and a role with
-- none at all.
SET client_min_messages = warning;
CREATE SCHEMA regress;
CREATE FUNCTION regress.try(q text, OUT code text, OUT message text,
                            OUT detail text, OUT hint text)
LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE q;
	code := 'ok';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE,
		message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL,
		hint = PG_EXCEPTION_HINT;
END
$$;
GRANT USAGE ON SCHEMA regress TO PUBLIC;
GRANT EXECUTE ON FUNCTION regress.try(text) TO PUBLIC;

DO $$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'regress_anonymize_portal') THEN
		CREATE ROLE regress_anonymize_portal LOGIN;
	END IF;
	IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'regress_anonymize_nobody') THEN
		CREATE ROLE regress_anonymize_nobody LOGIN;
	END IF;
END
$$;

-- the portal's grants, as README.md gives them
GRANT USAGE ON SCHEMA anonymize TO regress_anonymize_portal;
GRANT SELECT, INSERT, UPDATE, DELETE ON anonymize.anonymize_request TO regress_anonymize_portal;
RESET client_min_messages;

SELECT extname, extversion, nspname, extrelocatable
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE extname = 'anonymize';
