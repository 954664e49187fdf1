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

-- ---------------------------------------------------------------
-- Grants of the functions this update re-creates: kept
-- ---------------------------------------------------------------

-- add_target(), preview() and status() change their arguments or result
-- columns, which takes DROP and CREATE.  Whatever the DBA granted on them
-- (the portal's EXECUTE on preview(), say) is kept here and given back
-- at the end of this script.
SELECT pg_catalog.set_config('anonymize_update.acl_' || p.proname,
							 coalesce(p.proacl::text, ''), true)
FROM pg_catalog.pg_proc p
WHERE p.oid IN ('@extschema@.add_target(regclass, name, text, text, name)'::pg_catalog.regprocedure,
				'@extschema@.preview(bigint)'::pg_catalog.regprocedure,
				'@extschema@.status()'::pg_catalog.regprocedure);

-- ---------------------------------------------------------------
-- Targets: how each target is erased
-- ---------------------------------------------------------------

-- erase 'replace' writes replacement (NULL: the setting
-- anonymize.replacement) over a matching value, 'null' sets it to NULL.
ALTER TABLE @extschema@.target
	ADD COLUMN erase text NOT NULL DEFAULT 'replace'
		CONSTRAINT target_erase_check CHECK (erase IN ('replace', 'null')),
	ADD COLUMN replacement text,
	ADD CONSTRAINT target_replacement_check
		CHECK (erase = 'replace' OR replacement IS NULL);

-- ---------------------------------------------------------------
-- Targets: the tables, triggers and copies of a target
-- ---------------------------------------------------------------

-- The relations of a target: the table itself and every table that
-- inherits from it (inheritance children and partitions, at any depth),
-- found anew at every call, so that children added later are included.
CREATE FUNCTION @extschema@._target_tree(tbl regclass)
RETURNS TABLE (rel regclass, depth integer)
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
	WITH RECURSIVE tree(rel, depth) AS (
		SELECT tbl::oid, 0
		UNION
		SELECT i.inhrelid, t.depth + 1
		FROM tree t JOIN pg_inherits i ON i.inhparent = t.rel
	)
	SELECT rel::regclass, min(depth)::integer FROM tree GROUP BY rel ORDER BY 2, 1
$$;
COMMENT ON FUNCTION @extschema@._target_tree(regclass) IS
'a target''s relations: the table and every table inheriting from it (children and partitions, at any depth), with their depth';

-- The UPDATE triggers and rules of every relation of a target, each with
-- what the run does about it: the run rewrites with session_replication_role
-- = replica, as logical replication's apply does, so that ordinary (ENABLE
-- ORIGIN) triggers and rules do not fire; ENABLE ALWAYS and ENABLE
-- REPLICA ones would, and are refused.
CREATE FUNCTION @extschema@._target_triggers(tbl regclass)
RETURNS text[]
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT coalesce(array_agg(x.d ORDER BY x.depth, x.rel::text, x.d), '{}')
	FROM (
		SELECT t.depth, t.rel,
			   format('trigger %I on %s (%s UPDATE, %s): %s', g.tgname, t.rel,
					  CASE WHEN g.tgtype & 2 <> 0 THEN 'BEFORE'
						   WHEN g.tgtype & 64 <> 0 THEN 'INSTEAD OF' ELSE 'AFTER' END,
					  CASE WHEN g.tgtype & 1 <> 0 THEN 'row' ELSE 'statement' END,
					  CASE g.tgenabled WHEN 'O' THEN 'not fired by the run'
									   WHEN 'D' THEN 'disabled'
									   ELSE 'fires in the run: refused' END) AS d
		FROM @extschema@._target_tree(tbl) t
		JOIN pg_trigger g ON g.tgrelid = t.rel
		WHERE NOT g.tgisinternal AND g.tgtype & 16 <> 0 AND g.tgparentid = 0
		UNION ALL
		SELECT t.depth, t.rel,
			   format('rule %I on %s (UPDATE): %s', r.rulename, t.rel,
					  CASE r.ev_enabled WHEN 'O' THEN 'not fired by the run'
										WHEN 'D' THEN 'disabled'
										ELSE 'fires in the run: refused' END)
		FROM @extschema@._target_tree(tbl) t
		JOIN pg_rewrite r ON r.ev_class = t.rel
		WHERE r.ev_type = '2'
	) x
$$;
COMMENT ON FUNCTION @extschema@._target_triggers(regclass) IS
'the UPDATE triggers and rules of a target''s relations, each with what the run does about it';

-- The materialized views that read a target, directly or through views
-- and other materialized views, in the order a refresh must follow.
CREATE FUNCTION @extschema@._target_matviews(tbl regclass)
RETURNS regclass[]
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
	WITH RECURSIVE readers(rel, depth) AS (
		SELECT t.rel::oid, 0 FROM @extschema@._target_tree(tbl) t
		UNION
		SELECT r.ev_class, s.depth + 1
		FROM readers s
		JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = s.rel
						AND d.classid = 'pg_rewrite'::regclass
		JOIN pg_rewrite r ON r.oid = d.objid
		JOIN pg_class c ON c.oid = r.ev_class
		WHERE c.relkind IN ('v', 'm') AND r.ev_class <> s.rel AND s.depth < 32
	)
	SELECT coalesce(array_agg(m.rel::regclass ORDER BY m.depth, m.rel::regclass::text), '{}')
	FROM (SELECT rel, max(depth) AS depth FROM readers GROUP BY rel) m
	JOIN pg_class c ON c.oid = m.rel
	WHERE c.relkind = 'm'
$$;
COMMENT ON FUNCTION @extschema@._target_matviews(regclass) IS
'the materialized views that read a target, directly or through views, in refresh order';

-- ---------------------------------------------------------------
-- Targets: what the run will write, checked at registration
-- ---------------------------------------------------------------

-- The identifier column's type: text, varchar or char (or a domain over
-- them), or with erase 'null' an integer or numeric column of the digits
-- of an international number; long enough for the replacement; a domain
-- that takes what the run writes; NOT NULL only when replacing.
CREATE FUNCTION @extschema@._target_check_type(tbl regclass, col name, kind text,
											   erase text, value text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_type		oid;
	v_typmod	integer;
	v_base		oid;
	v_basemod	integer;
	v_typtype	"char";
	v_state		text;
BEGIN
	SELECT a.atttypid, a.atttypmod INTO v_type, v_typmod
	FROM pg_attribute a
	WHERE a.attrelid = tbl AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'column "%" of relation "%" does not exist', col, tbl
			USING ERRCODE = 'undefined_column',
				  HINT = 'Name the column that holds the phone number, chatter ID or email address.';
	END IF;
	v_base := v_type;
	v_basemod := v_typmod;
	LOOP
		SELECT t.typtype INTO v_typtype FROM pg_type t WHERE t.oid = v_base;
		EXIT WHEN v_typtype <> 'd';
		SELECT t.typbasetype, CASE WHEN v_basemod >= 0 THEN v_basemod ELSE t.typtypmod END
		INTO v_base, v_basemod FROM pg_type t WHERE t.oid = v_base;
	END LOOP;

	IF v_base IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype, 'numeric'::regtype) THEN
		IF erase <> 'null' THEN
			RAISE EXCEPTION 'column "%" of relation "%" is of type %, which cannot hold the replacement text',
				col, tbl, format_type(v_type, v_typmod)
				USING ERRCODE = 'datatype_mismatch',
					  HINT = 'Register it with erase => ''null'': matching numbers are set to NULL.';
		END IF;
		IF kind <> 'phone' THEN
			RAISE EXCEPTION 'column "%" of relation "%" is of type % and cannot hold an email address',
				col, tbl, format_type(v_type, v_typmod)
				USING ERRCODE = 'datatype_mismatch',
					  HINT = 'A number column is registered with kind => ''phone''; its digits are read as an international number, country code first.';
		END IF;
	ELSIF v_base NOT IN ('text'::regtype, 'varchar'::regtype, 'bpchar'::regtype) THEN
		RAISE EXCEPTION 'column "%" of relation "%" is of type %, not text', col, tbl, format_type(v_type, v_typmod)
			USING ERRCODE = 'datatype_mismatch',
				  HINT = 'An identifier column is text, varchar or char, or with erase => ''null'' an integer or numeric column of international numbers.';
	ELSIF erase = 'replace' AND v_basemod >= 4 AND char_length(value) > v_basemod - 4 THEN
		RAISE EXCEPTION 'column "%" of relation "%" is too short for the replacement "%"',
			col, tbl, value
			USING ERRCODE = 'string_data_right_truncation',
				  DETAIL = format('The column is %s; the replacement has %s characters.',
								  format_type(v_type, v_typmod), char_length(value)),
				  HINT = 'Give this target a shorter replacement => ''...'', or register it with erase => ''null''.';
	END IF;

	IF erase = 'null' AND EXISTS (SELECT FROM @extschema@._target_tree(tbl) t
								  JOIN pg_attribute a ON a.attrelid = t.rel AND a.attname = col
								  WHERE a.attnotnull) THEN
		RAISE EXCEPTION 'column "%" of relation "%" is NOT NULL and cannot be erased to NULL', col, tbl
			USING ERRCODE = 'not_null_violation',
				  HINT = 'Register it with erase => ''replace'' (the default), or drop the NOT NULL constraint.';
	END IF;

	IF v_type <> v_base THEN
		BEGIN
			EXECUTE format('SELECT CAST(%L AS %s)', value, format_type(v_type, v_typmod));
		EXCEPTION WHEN OTHERS THEN
			GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE;
			RAISE EXCEPTION 'the domain % of column "%" of relation "%" does not accept %',
				format_type(v_type, v_typmod), col, tbl,
				CASE WHEN value IS NULL THEN 'NULL' ELSE format('the replacement "%s"', value) END
				USING ERRCODE = CASE WHEN v_state = '23502' THEN 'not_null_violation' ELSE 'check_violation' END,
					  HINT = CASE WHEN value IS NULL
							 THEN 'Register it with erase => ''replace'' (the default), or register another column.'
							 ELSE 'Give this target a replacement => ''...'' that the domain accepts, register it with erase => ''null'', or register another column.' END;
		END;
	END IF;
END
$$;
COMMENT ON FUNCTION @extschema@._target_check_type(regclass, name, text, text, text) IS
'add_target() and the run: the identifier column''s type, length, domain and NOT NULL take what the run writes';

-- The constraints of every relation of the target on the column: a
-- UNIQUE, primary key or exclusion constraint (two erased rows would
-- collide), a CHECK that what the run writes violates, a foreign key, a
-- partition key (the row would have to move), a Citus distribution
-- column.
CREATE FUNCTION @extschema@._target_check_constraints(tbl regclass, col name,
													  erase text, value text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r			record;
	v_ok		boolean;
BEGIN
	FOR r IN
		SELECT t.rel, a.attnum, k.conname, k.contype, k.conindid,
			   pg_get_expr(k.conbin, k.conrelid) AS expr
		FROM @extschema@._target_tree(tbl) t
		JOIN pg_attribute a ON a.attrelid = t.rel AND a.attname = col AND NOT a.attisdropped
		JOIN pg_constraint k ON k.conrelid = t.rel AND a.attnum = ANY (k.conkey)
		ORDER BY t.depth, t.rel::text, k.conname
	LOOP
		IF r.contype IN ('p', 'u', 'x')
		   AND (erase = 'replace'
				OR EXISTS (SELECT FROM pg_index i
						   WHERE i.indexrelid = r.conindid AND i.indnullsnotdistinct)) THEN
			RAISE EXCEPTION 'column "%" of relation "%" is under the % constraint "%"', col, r.rel,
				CASE r.contype WHEN 'p' THEN 'primary key' WHEN 'u' THEN 'UNIQUE' ELSE 'exclusion' END,
				r.conname
				USING ERRCODE = 'unique_violation',
					  DETAIL = 'Two erased rows would hold the same value and collide.',
					  HINT = CASE WHEN erase = 'null'
							 THEN 'Make the constraint NULLS DISTINCT, or register another column.'
							 ELSE 'Register it with erase => ''null'' (NULLs do not collide), or register another column.' END;
		ELSIF r.contype = 'f' THEN
			RAISE EXCEPTION 'column "%" of relation "%" is under the foreign key "%"', col, r.rel, r.conname
				USING ERRCODE = 'foreign_key_violation',
					  DETAIL = 'The run rewrites without firing triggers, so the foreign key would not be checked.',
					  HINT = 'Erase the referenced row''s identifier instead, or drop the foreign key.';
		ELSIF r.contype = 'c' THEN
			BEGIN
				EXECUTE format('SELECT coalesce((%s), true) FROM (SELECT %s) AS c', r.expr,
							   (SELECT string_agg(CASE WHEN a.attname = col
													   THEN format('CAST(%L AS %s) AS %I', value,
																   format_type(a.atttypid, a.atttypmod), a.attname)
													   ELSE format('CAST(NULL AS %s) AS %I',
																   format_type(a.atttypid, a.atttypmod), a.attname) END,
												  ', ' ORDER BY a.attnum)
								FROM pg_attribute a
								WHERE a.attrelid = r.rel AND a.attnum > 0 AND NOT a.attisdropped))
					INTO v_ok;
			EXCEPTION WHEN OTHERS THEN
				v_ok := false;
			END;
			IF NOT v_ok THEN
				RAISE EXCEPTION 'the CHECK constraint "%" of relation "%" does not accept %', r.conname, r.rel,
					CASE WHEN value IS NULL THEN 'NULL' ELSE format('the replacement "%s"', value) END
					USING ERRCODE = 'check_violation',
						  HINT = CASE WHEN value IS NULL
								 THEN 'Register it with erase => ''replace'' (the default), or register another column.'
								 ELSE 'Give this target a replacement => ''...'' that the constraint accepts, register it with erase => ''null'', or register another column.' END;
			END IF;
		END IF;
	END LOOP;

	-- unique indexes that are not constraints, on the column or an
	-- expression of it
	FOR r IN
		SELECT t.rel, i.indexrelid::regclass AS idx
		FROM @extschema@._target_tree(tbl) t
		JOIN pg_attribute a ON a.attrelid = t.rel AND a.attname = col AND NOT a.attisdropped
		JOIN pg_index i ON i.indrelid = t.rel AND i.indisunique
		WHERE (erase = 'replace' OR i.indnullsnotdistinct)
		  AND NOT EXISTS (SELECT FROM pg_constraint k WHERE k.conindid = i.indexrelid)
		  AND (a.attnum = ANY (i.indkey)
			   OR EXISTS (SELECT FROM pg_depend d
						  WHERE d.classid = 'pg_class'::regclass AND d.objid = i.indexrelid
							AND d.refclassid = 'pg_class'::regclass AND d.refobjid = t.rel
							AND d.refobjsubid = a.attnum))
		ORDER BY t.depth, i.indexrelid::regclass::text
	LOOP
		RAISE EXCEPTION 'column "%" of relation "%" is in the unique index "%"', col, r.rel, r.idx
			USING ERRCODE = 'unique_violation',
				  DETAIL = 'Two erased rows would hold the same value and collide.',
				  HINT = CASE WHEN erase = 'null'
						 THEN 'Make the index NULLS DISTINCT, or register another column.'
						 ELSE 'Register it with erase => ''null'' (NULLs do not collide), or register another column.' END;
	END LOOP;

	FOR r IN
		SELECT t.rel
		FROM @extschema@._target_tree(tbl) t
		JOIN pg_partitioned_table p ON p.partrelid = t.rel
		JOIN pg_attribute a ON a.attrelid = t.rel AND a.attname = col
		WHERE a.attnum = ANY (p.partattrs::int2[])
		   OR EXISTS (SELECT FROM pg_depend d
					  WHERE d.classid = 'pg_class'::regclass AND d.objid = t.rel
						AND d.refclassid = 'pg_class'::regclass AND d.refobjid = t.rel
						AND d.refobjsubid = a.attnum AND d.deptype = 'i')
		ORDER BY t.depth
	LOOP
		RAISE EXCEPTION 'column "%" is in the partition key of "%"', col, r.rel
			USING ERRCODE = 'feature_not_supported',
				  DETAIL = 'An erased row would have to move to another partition.',
				  HINT = 'Register another column, or partition the table by its time column.';
	END LOOP;

	IF to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL THEN
		FOR r IN EXECUTE
			'SELECT p.logicalrelid::regclass AS rel FROM pg_catalog.pg_dist_partition p'
			' JOIN @extschema@._target_tree($1) t ON t.rel = p.logicalrelid'
			' WHERE p.partkey IS NOT NULL'
			'   AND pg_catalog.column_to_column_name(p.logicalrelid, p.partkey) = $2'
			USING tbl, col
		LOOP
			RAISE EXCEPTION 'column "%" is the distribution column of the Citus table "%"', col, r.rel
				USING ERRCODE = 'feature_not_supported',
					  DETAIL = 'Citus cannot update a distribution column.',
					  HINT = 'Register another column, or distribute the table by another column.';
		END LOOP;
	END IF;
END
$$;
COMMENT ON FUNCTION @extschema@._target_check_constraints(regclass, name, text, text) IS
'add_target() and the run: no UNIQUE, CHECK, foreign key, partition key or Citus distribution column that what the run writes would break';

-- Every relation of the target can be rewritten in place, by a run that
-- fires no trigger and no rule: no foreign table or view among the
-- children, no ENABLE ALWAYS or ENABLE REPLICA trigger or rule on UPDATE.
CREATE FUNCTION @extschema@._target_check_relations(tbl regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r			record;
BEGIN
	FOR r IN
		SELECT t.rel FROM @extschema@._target_tree(tbl) t JOIN pg_class c ON c.oid = t.rel
		WHERE c.relkind NOT IN ('r', 'p') ORDER BY t.depth, t.rel::text
	LOOP
		RAISE EXCEPTION '"%", a child of "%", is not a table', r.rel, tbl
			USING ERRCODE = 'wrong_object_type',
				  DETAIL = 'Foreign tables cannot be rewritten in place.',
				  HINT = 'Detach the child (ALTER TABLE ... NO INHERIT, or DETACH PARTITION) and erase it where its data lives.';
	END LOOP;
	FOR r IN
		SELECT t.rel, g.tgname AS name, 'trigger' AS what,
			   CASE g.tgenabled WHEN 'A' THEN 'ALWAYS' ELSE 'REPLICA' END AS mode
		FROM @extschema@._target_tree(tbl) t JOIN pg_trigger g ON g.tgrelid = t.rel
		WHERE NOT g.tgisinternal AND g.tgtype & 16 <> 0 AND g.tgenabled IN ('A', 'R')
		UNION ALL
		SELECT t.rel, w.rulename, 'rule', CASE w.ev_enabled WHEN 'A' THEN 'ALWAYS' ELSE 'REPLICA' END
		FROM @extschema@._target_tree(tbl) t JOIN pg_rewrite w ON w.ev_class = t.rel
		WHERE w.ev_type = '2' AND w.ev_enabled IN ('A', 'R')
		ORDER BY 1, 2
	LOOP
		RAISE EXCEPTION 'the % "%" on "%" would fire when the run rewrites it', r.what, r.name, r.rel
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = format('It is ENABLE %s; the run rewrites as logical replication applies changes, where only ordinary (ENABLE ORIGIN) triggers and rules stay silent, and a firing one could copy the identifier elsewhere.', r.mode),
				  HINT = format('Make it an ordinary one (ALTER TABLE %s ENABLE %s %I), or drop it.',
								r.rel, upper(r.what), r.name);
	END LOOP;
END
$$;
COMMENT ON FUNCTION @extschema@._target_check_relations(regclass) IS
'add_target() and the run: every relation of a target is a table, with no UPDATE trigger or rule that fires in replica mode';

-- Everything above, for a target as registered (the run calls it too, so
-- that a constraint or trigger added after registration fails that target
-- with the same reason).  value: what the run writes.
CREATE FUNCTION @extschema@._target_check(tbl regclass, col name, kind text,
										  erase text, replacement text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_value		text;
BEGIN
	v_value := CASE WHEN erase = 'null' THEN NULL
					ELSE coalesce(replacement, current_setting('anonymize.replacement', true),
								  'Anonymized') END;
	PERFORM @extschema@._target_check_relations(tbl);
	PERFORM @extschema@._target_check_type(tbl, col, kind, erase, v_value);
	PERFORM @extschema@._target_check_constraints(tbl, col, erase, v_value);
END
$$;
COMMENT ON FUNCTION @extschema@._target_check(regclass, name, text, text, text) IS
'every check of what the run writes into a target; raises the reason, with its SQLSTATE and the way out';

-- ---------------------------------------------------------------
-- Targets: add_target() with erase and replacement
-- ---------------------------------------------------------------

DROP FUNCTION @extschema@.add_target(regclass, name, text, text, name);

-- add_target(): validates everything the run will rely on and everything
-- it will write, so that a mistake shows at registration and never at
-- 2 a.m.
CREATE FUNCTION @extschema@.add_target(tbl regclass, col name, kind text,
									   scope text, time_col name,
									   erase text DEFAULT 'replace',
									   replacement text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_relkind	"char";
	v_timetype	regtype;
	v_nullable	boolean;
	v_triggers	text[];
BEGIN
	IF tbl IS NULL OR col IS NULL OR kind IS NULL OR scope IS NULL OR time_col IS NULL
	   OR erase IS NULL THEN
		RAISE EXCEPTION 'arguments of add_target must not be null'
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'Give the table, the identifier column, its kind, the scope and the time column.';
	END IF;
	SELECT c.relkind INTO v_relkind FROM pg_class c WHERE c.oid = tbl;
	IF v_relkind NOT IN ('r', 'p') THEN
		RAISE EXCEPTION '"%" is not a table', tbl
			USING ERRCODE = 'wrong_object_type',
				  HINT = 'Register an ordinary, partitioned or inheritance parent table; views and foreign tables cannot be rewritten in place.';
	END IF;
	IF kind NOT IN ('phone', 'email', 'phone_or_email') THEN
		RAISE EXCEPTION 'invalid target kind "%"', kind
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'The kind is phone, email or phone_or_email (a chatter ID that can be either).';
	END IF;
	IF scope NOT IN ('archive', 'sms_survey', 'raw_data') THEN
		RAISE EXCEPTION 'invalid target scope "%"', scope
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'The scope is archive, sms_survey or raw_data, as ticked on the page.';
	END IF;
	IF erase NOT IN ('replace', 'null') THEN
		RAISE EXCEPTION 'invalid erase "%"', erase
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'erase is replace (write the replacement text) or null (set matching values to NULL).';
	END IF;
	IF erase = 'null' AND replacement IS NOT NULL THEN
		RAISE EXCEPTION 'a replacement is given with erase => ''null'''
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Give a replacement with erase => ''replace'' only.';
	END IF;

	PERFORM @extschema@._target_check(tbl, col, kind, erase, replacement);

	SELECT a.atttypid::regtype, NOT a.attnotnull INTO v_timetype, v_nullable
	FROM pg_attribute a
	WHERE a.attrelid = tbl AND a.attname = time_col AND a.attnum > 0 AND NOT a.attisdropped;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'column "%" of relation "%" does not exist', time_col, tbl
			USING ERRCODE = 'undefined_column',
				  HINT = 'Name the column that holds when the contact was made.';
	END IF;
	IF v_timetype NOT IN ('date'::regtype, 'timestamp without time zone'::regtype,
						  'timestamp with time zone'::regtype) THEN
		RAISE EXCEPTION 'column "%" of relation "%" is of type %, not a date or timestamp', time_col, tbl, v_timetype
			USING ERRCODE = 'datatype_mismatch',
				  HINT = 'The time column is date, timestamp or timestamptz; it is compared with the request''s to_date.';
	END IF;

	IF EXISTS (SELECT FROM @extschema@.target t
			   WHERE t.col = add_target.col AND t.tbl <> add_target.tbl
				 AND add_target.tbl IN (SELECT r.rel FROM @extschema@._target_tree(t.tbl) r)) THEN
		RAISE EXCEPTION 'the parent of "%" is already a target for column "%"', tbl, col
			USING ERRCODE = 'duplicate_object',
				  HINT = 'A registered partitioned table or inheritance parent covers its children.';
	END IF;

	INSERT INTO @extschema@.target (tbl, col, kind, scope, time_col, erase, replacement)
	VALUES (add_target.tbl, add_target.col, add_target.kind, add_target.scope,
			add_target.time_col, add_target.erase, add_target.replacement)
	ON CONFLICT ON CONSTRAINT target_pkey DO UPDATE
		SET kind = EXCLUDED.kind, scope = EXCLUDED.scope, time_col = EXCLUDED.time_col,
			erase = EXCLUDED.erase, replacement = EXCLUDED.replacement;

	IF v_nullable THEN
		RAISE NOTICE 'rows of "%" whose "%" is NULL are erased by every request (preview() counts them as undated)',
			tbl, time_col;
	END IF;
	v_triggers := @extschema@._target_triggers(tbl);
	IF cardinality(v_triggers) > 0 THEN
		RAISE NOTICE 'the run rewrites "%" without firing its triggers and rules: %', tbl,
			array_to_string(v_triggers, '; ');
	END IF;
END
$$;
COMMENT ON FUNCTION @extschema@.add_target(regclass, name, text, text, name, text, text) IS
'register (or re-register) an identifier column of a table for the run, with how it is erased';

-- ---------------------------------------------------------------
-- Targets: the view
-- ---------------------------------------------------------------

-- Only catalogs in the view: a role that may read it (the auditor) needs
-- no EXECUTE on the helper functions above.
CREATE OR REPLACE VIEW @extschema@.targets AS
SELECT t.tbl, t.col, t.kind, t.scope, t.time_col,
	   c.relkind = 'p' AS partitioned, t.added_at, t.added_by,
	   t.erase, t.replacement,
	   c.relkind = 'r' AND EXISTS (SELECT FROM pg_catalog.pg_inherits i WHERE i.inhparent = t.tbl)
		   AS inherited,
	   (SELECT count(*) FROM unnest(tr.rels, tr.depths) AS r(rel, depth) JOIN pg_catalog.pg_class rc ON rc.oid = r.rel
		WHERE rc.relkind = 'r')::integer AS tables,
	   NOT a.attnotnull AS time_nullable,
	   (SELECT coalesce(array_agg(x.d ORDER BY x.depth, x.rel::regclass::text, x.d), '{}')
		FROM (SELECT r.depth, r.rel,
					 pg_catalog.format('trigger %I on %s (%s UPDATE, %s): %s', g.tgname, r.rel::regclass,
						CASE WHEN g.tgtype & 2 <> 0 THEN 'BEFORE'
							 WHEN g.tgtype & 64 <> 0 THEN 'INSTEAD OF' ELSE 'AFTER' END,
						CASE WHEN g.tgtype & 1 <> 0 THEN 'row' ELSE 'statement' END,
						CASE g.tgenabled WHEN 'O' THEN 'not fired by the run'
										 WHEN 'D' THEN 'disabled'
										 ELSE 'fires in the run: refused' END) AS d
			  FROM unnest(tr.rels, tr.depths) AS r(rel, depth) JOIN pg_catalog.pg_trigger g ON g.tgrelid = r.rel
			  WHERE NOT g.tgisinternal AND g.tgtype & 16 <> 0 AND g.tgparentid = 0
			  UNION ALL
			  SELECT r.depth, r.rel,
					 pg_catalog.format('rule %I on %s (UPDATE): %s', w.rulename, r.rel::regclass,
						CASE w.ev_enabled WHEN 'O' THEN 'not fired by the run'
										  WHEN 'D' THEN 'disabled'
										  ELSE 'fires in the run: refused' END)
			  FROM unnest(tr.rels, tr.depths) AS r(rel, depth) JOIN pg_catalog.pg_rewrite w ON w.ev_class = r.rel
			  WHERE w.ev_type = '2') x) AS triggers,
	   (WITH RECURSIVE readers(rel, depth) AS (
			SELECT r.rel, 0 FROM unnest(tr.rels) AS r(rel)
			UNION
			SELECT w.ev_class, s.depth + 1
			FROM readers s
			JOIN pg_catalog.pg_depend d ON d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
				AND d.refobjid = s.rel AND d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
			JOIN pg_catalog.pg_rewrite w ON w.oid = d.objid
			JOIN pg_catalog.pg_class vc ON vc.oid = w.ev_class
			WHERE vc.relkind IN ('v', 'm') AND w.ev_class <> s.rel AND s.depth < 32)
		SELECT coalesce(array_agg(m.rel::regclass ORDER BY m.depth, m.rel::regclass::text), '{}')
		FROM (SELECT rel, max(depth) AS depth FROM readers GROUP BY rel) m
		JOIN pg_catalog.pg_class mc ON mc.oid = m.rel
		WHERE mc.relkind = 'm') AS materialized_views
FROM @extschema@.target t
JOIN pg_catalog.pg_class c ON c.oid = t.tbl
LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = t.tbl AND a.attname = t.time_col
	AND NOT a.attisdropped
CROSS JOIN LATERAL (
	WITH RECURSIVE tree(rel, depth) AS (
		SELECT t.tbl::oid, 0
		UNION
		SELECT i.inhrelid, tr.depth + 1
		FROM tree tr JOIN pg_catalog.pg_inherits i ON i.inhparent = tr.rel
	)
	SELECT array_agg(tree.rel) AS rels, array_agg(tree.depth) AS depths FROM tree
) tr;
COMMENT ON VIEW @extschema@.targets IS
'registered identifier columns, how they are erased, the tables the run scans, their triggers and the materialized views that copy them';

-- ---------------------------------------------------------------
-- The run: preview() with rows of unknown time, triggers and copies
-- ---------------------------------------------------------------

DROP FUNCTION @extschema@.preview(bigint);

CREATE FUNCTION @extschema@.preview(id bigint)
RETURNS TABLE (target regclass, col name, rows bigint, undated bigint,
			   triggers text[], materialized_views regclass[])
AS 'MODULE_PATHNAME', 'anonymize_preview'
LANGUAGE C STABLE STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.preview(bigint) IS
'rows a request would rewrite, per target in its scopes (undated: those of them whose time is NULL), with the target''s triggers and the materialized views the run refreshes; changes nothing';

-- ---------------------------------------------------------------
-- The search guard: number columns
-- ---------------------------------------------------------------

-- protect(tbl): as in 1.0, and a number column (erase 'null') is read as
-- the digits of an international number, as the run reads it.  On a
-- Citus table the filter is _citus_guard_visible(), which reads on every
-- node the digests that the coordinator keeps in reference tables
-- (section "Citus tables: the search guard on the shards").
CREATE OR REPLACE FUNCTION @extschema@.protect(tbl regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r			record;
	v_quals		text[] := '{}';
	v_rls		boolean;
	v_citus		boolean;
	v_fn		text;
BEGIN
	IF tbl IS NULL THEN
		RAISE EXCEPTION 'argument of protect must not be null'
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'Name a table registered with anonymize.add_target().';
	END IF;
	IF NOT EXISTS (SELECT FROM @extschema@.target t WHERE t.tbl = protect.tbl) THEN
		RAISE EXCEPTION 'relation "%" is not an anonymize target', tbl
			USING ERRCODE = 'undefined_object',
				  HINT = 'Register its identifier columns with anonymize.add_target() first; anonymize.targets lists them.';
	END IF;
	-- on a Citus table the policy runs where the shards are, on nodes
	-- whose pages of requests are empty: it reads the digests that the
	-- coordinator keeps in a reference table (_citus_guard_visible())
	v_citus := false;
	IF to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL THEN
		EXECUTE 'SELECT EXISTS (SELECT FROM pg_catalog.pg_dist_partition WHERE logicalrelid = $1)'
			INTO v_citus USING tbl;
	END IF;
	v_fn := CASE WHEN v_citus THEN '_citus_guard_visible' ELSE '_guard_visible' END;
	IF 0::oid IN (SELECT @extschema@._guard_readers(tbl)) THEN
		RAISE EXCEPTION 'relation "%" is readable by PUBLIC', tbl
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = 'Every role that reads a protected table gets EXECUTE on the guard''s function, and PUBLIC gets nothing in schema anonymize.',
				  HINT = 'Revoke SELECT from PUBLIC and grant it to the roles that read the table.';
	END IF;

	FOR r IN
		SELECT t.col, t.time_col,
			   CASE t.scope WHEN 'archive' THEN 'a' WHEN 'sms_survey' THEN 's' ELSE 'r' END AS sc,
			   CASE t.kind WHEN 'phone' THEN 'p' WHEN 'email' THEN 'e' ELSE 'b' END AS kd,
			   a.atttypid AS timetype,
			   pg_catalog.format_type(ia.atttypid, NULL) IN ('smallint', 'integer', 'bigint', 'numeric')
				   OR EXISTS (SELECT FROM pg_type d WHERE d.oid = ia.atttypid AND d.typtype = 'd'
							  AND d.typbasetype IN ('int2'::regtype, 'int4'::regtype,
													'int8'::regtype, 'numeric'::regtype)) AS is_number
		FROM @extschema@.target t
		JOIN pg_attribute a ON a.attrelid = t.tbl AND a.attname = t.time_col
		JOIN pg_attribute ia ON ia.attrelid = t.tbl AND ia.attname = t.col
		WHERE t.tbl = protect.tbl
		ORDER BY t.col
	LOOP
		-- a number column holds the digits of an international number (a
		-- negative or fractional one is none, as for the run)
		v_quals := v_quals || format(CASE WHEN r.is_number
									 THEN '@extschema@.%5$I(CASE WHEN (%1$I)::text ~ ''^[0-9]+$'' THEN ''+'' || (%1$I)::text END, %2$I, %3$L::"char", %4$L::"char")'
									 ELSE '@extschema@.%5$I((%1$I)::text, %2$I, %3$L::"char", %4$L::"char")' END,
									 r.col, r.time_col, r.sc, r.kd, v_fn);
	END LOOP;

	SELECT c.relrowsecurity INTO v_rls FROM pg_class c WHERE c.oid = tbl;
	IF v_citus THEN
		-- Citus copies every policy to the shards as PERMISSIVE (it drops
		-- AS RESTRICTIVE): the guard must be the only permissive policy
		-- of SELECT, so the table may have no row-level security of its own
		IF (v_rls AND NOT EXISTS (SELECT FROM pg_policy p WHERE p.polrelid = tbl
								  AND p.polname = 'anonymize_visible'))
		   OR EXISTS (SELECT FROM pg_policy p WHERE p.polrelid = tbl
					  AND p.polname NOT IN ('anonymize_guard', 'anonymize_visible')) THEN
			RAISE EXCEPTION 'Citus table "%" has row-level security of its own', tbl
				USING ERRCODE = 'feature_not_supported',
					  DETAIL = 'Citus copies every policy to the shards as a permissive one, so the guard cannot be combined with other policies there.',
					  HINT = 'Drop the table''s own policies and disable its row-level security, or have the portal search through anonymize.is_anonymized().';
		END IF;
		-- the digests first: a policy on the shards must find them
		PERFORM @extschema@._citus_guard_setup();
		IF NOT v_rls THEN
			EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
			-- INSERT only: SELECT, UPDATE and DELETE see what the guard lets through
			EXECUTE format('CREATE POLICY anonymize_visible ON %s AS PERMISSIVE FOR INSERT TO PUBLIC '
						   'WITH CHECK (true)', tbl);
		END IF;
	ELSIF NOT v_rls THEN
		EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
		EXECUTE format('CREATE POLICY anonymize_visible ON %s AS PERMISSIVE FOR ALL TO PUBLIC '
					   'USING (true) WITH CHECK (true)', tbl);
	END IF;
	IF EXISTS (SELECT FROM pg_policy p WHERE p.polrelid = tbl AND p.polname = 'anonymize_guard') THEN
		EXECUTE format('DROP POLICY anonymize_guard ON %s', tbl);
	END IF;
	IF v_citus THEN
		EXECUTE format('CREATE POLICY anonymize_guard ON %s AS PERMISSIVE FOR ALL TO PUBLIC '
					   'USING (%s) WITH CHECK (true)', tbl, array_to_string(v_quals, ' AND '));
	ELSE
		EXECUTE format('CREATE POLICY anonymize_guard ON %s AS RESTRICTIVE FOR SELECT TO PUBLIC '
					   'USING (%s)', tbl, array_to_string(v_quals, ' AND '));
	END IF;
	PERFORM @extschema@._guard_grants();
	IF v_citus THEN
		-- a worker added since, or grants from before: every worker again
		PERFORM @extschema@._citus_guard_push_grants();
	END IF;
END
$$;

-- ---------------------------------------------------------------
-- Privileges: as in a fresh install, nothing for PUBLIC
-- ---------------------------------------------------------------

REVOKE ALL ON FUNCTION @extschema@._target_tree(regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._target_triggers(regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._target_matviews(regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._target_check_type(regclass, name, text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._target_check_constraints(regclass, name, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._target_check_relations(regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._target_check(regclass, name, text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.add_target(regclass, name, text, text, name, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.preview(bigint) FROM PUBLIC;

-- ---------------------------------------------------------------
-- The workers: one per database served
-- ---------------------------------------------------------------

-- status() also names the database whose worker it describes (this one
-- when anonymize.database serves it, else NULL).  A new OUT column needs
-- a new function: the grants of status() are kept across it (the
-- sections "Grants of the functions this update re-creates").
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

-- ---------------------------------------------------------------
-- The ledger: Done stays done
-- ---------------------------------------------------------------

-- The keyed digests of every Done request, with what the run needs to
-- keep applying it: its to_date and scopes.  The run adds a Done
-- request's entries as it finishes it; request_retention leaves them
-- (anonymize.ledger_retention purges them); ledger_import() adds those of
-- another copy of the database.  No plaintext, ever.
CREATE TABLE @extschema@.ledger (
	request_id	bigint NOT NULL,
	kind		text NOT NULL CHECK (kind IN ('phone', 'email')),
	digest		bytea NOT NULL CHECK (length(digest) = 32),
	to_date		date NOT NULL,
	archive		boolean NOT NULL,
	sms_survey	boolean NOT NULL,
	raw_data	boolean NOT NULL,
	done_at		timestamptz NOT NULL,
	added_at	timestamptz NOT NULL DEFAULT now(),
	source		text NOT NULL DEFAULT 'run' CHECK (source IN ('run', 'upgrade', 'import')),
	PRIMARY KEY (request_id, kind)
);
COMMENT ON TABLE @extschema@.ledger IS
'keyed digests of every Done request, with its to_date and scopes: later runs keep erasing what it names (late rows, restored backups); no plaintext';

-- Which rows the next run checks against the ledger: those written by
-- transactions from horizon on, in this cluster and database; every row
-- when full_recheck (no horizon yet, a ledger import, another cluster or
-- database), and every row of a target not in targets (registered since,
-- or failed).  Not dumped: a restored dump re-checks every row once.
CREATE TABLE @extschema@.ledger_state (
	id					integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
	horizon				xid8,
	system_identifier	bigint,
	database_oid		oid,
	full_recheck		boolean NOT NULL DEFAULT true,
	imports				bigint NOT NULL DEFAULT 0,
	targets				text[],
	updated_at			timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE @extschema@.ledger_state IS
'the run''s ledger horizon: rows written since it, or every row after an import or a restore, are checked against the ledger';

-- The ledger of the requests Done before this update.
INSERT INTO @extschema@.ledger (request_id, kind, digest, to_date, archive, sms_survey,
								raw_data, done_at, source)
SELECT r.id, k.kind, k.digest, r.to_date, r.archive, r.sms_survey, r.raw_data,
	   coalesce(r.done_at, now()), 'upgrade'
FROM @extschema@.anonymize_request r
JOIN @extschema@.request_private p ON p.request_id = r.id
CROSS JOIN LATERAL (VALUES ('phone', p.phone_digest), ('email', p.email_digest)) AS k(kind, digest)
WHERE r.status = 'Done' AND k.digest IS NOT NULL;

-- A late erasure is a receipt of its own: event 'late', with the target
-- and the rows, one per request, target and run.
ALTER TABLE @extschema@.request_log
	DROP CONSTRAINT request_log_event_check,
	DROP CONSTRAINT request_log_check1,
	ADD CONSTRAINT request_log_event_check
		CHECK (event IN ('status', 'rewrite', 'cancelled', 'confirmed', 'late')),
	ADD CONSTRAINT request_log_check1
		CHECK ((event IN ('rewrite', 'late')) = (target IS NOT NULL AND col IS NOT NULL AND rows IS NOT NULL));
COMMENT ON TABLE @extschema@.request_log IS
'receipts: status changes of each request, rows rewritten per target, and rows erased late by a Done request (event late), with times; no identifier';

-- anonymize.ledger_retention purges ledger entries; retention_log says so.
ALTER TABLE @extschema@.retention_log
	DROP CONSTRAINT retention_log_kind_check,
	ADD CONSTRAINT retention_log_kind_check CHECK (kind IN ('requests', 'sms_survey', 'ledger'));

CREATE FUNCTION @extschema@._key_fingerprint()
RETURNS text
AS 'MODULE_PATHNAME', 'anonymize_key_fingerprint'
LANGUAGE C STABLE;
COMMENT ON FUNCTION @extschema@._key_fingerprint() IS
'a fingerprint of the digest key (an HMAC of a fixed text, not the key), NULL when there is none: two databases whose digests can match have the same';

CREATE FUNCTION @extschema@._ledger_changed()
RETURNS void
AS 'MODULE_PATHNAME', 'anonymize_ledger_changed'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@._ledger_changed() IS
'after a change of the ledger: every session''s search cache is rebuilt at its next statement';

-- The ledger as one portable JSON document: entries ordered by request
-- and kind, digests in hex, and the key's fingerprint.
CREATE FUNCTION @extschema@.ledger_export()
RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT jsonb_build_object(
		'format', 'anonymize ledger',
		'version', 1,
		'key_fingerprint', @extschema@._key_fingerprint(),
		'exported_at', now(),
		'entries', coalesce((
			SELECT jsonb_agg(jsonb_build_object(
					'request_id', l.request_id,
					'kind', l.kind,
					'digest', encode(l.digest, 'hex'),
					'to_date', l.to_date,
					'scopes', to_jsonb(array_remove(ARRAY[
						CASE WHEN l.archive THEN 'archive' END,
						CASE WHEN l.sms_survey THEN 'sms_survey' END,
						CASE WHEN l.raw_data THEN 'raw_data' END], NULL)),
					'done_at', l.done_at)
				ORDER BY l.request_id, l.kind)
			FROM @extschema@.ledger l), '[]'::jsonb))::text
$$;
COMMENT ON FUNCTION @extschema@.ledger_export() IS
'the ledger as one portable document (JSON): digests, kinds, dates, scopes, request ids and the key''s fingerprint; no plaintext';

-- The entries of a document that this database lacks, all or nothing;
-- then the next run re-checks every row of every target.
CREATE FUNCTION @extschema@.ledger_import(doc text)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_doc		jsonb;
	v_fp		text;
	v_bad		bigint;
	v_added		integer;
	v_max		bigint;
BEGIN
	IF doc IS NULL THEN
		RAISE EXCEPTION 'argument of ledger_import must not be null'
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'Pass the text that anonymize.ledger_export() returned.';
	END IF;
	BEGIN
		v_doc := doc::jsonb;
	EXCEPTION WHEN others THEN
		RAISE EXCEPTION 'malformed ledger document'
			USING ERRCODE = 'invalid_text_representation',
				  DETAIL = 'It is not JSON.',
				  HINT = 'Pass the text that anonymize.ledger_export() returned, unchanged.';
	END;
	IF jsonb_typeof(v_doc) IS DISTINCT FROM 'object'
	   OR v_doc ->> 'format' IS DISTINCT FROM 'anonymize ledger'
	   OR v_doc ->> 'version' IS DISTINCT FROM '1'
	   OR jsonb_typeof(v_doc -> 'entries') IS DISTINCT FROM 'array' THEN
		RAISE EXCEPTION 'malformed ledger document'
			USING ERRCODE = 'invalid_text_representation',
				  DETAIL = 'It lacks the format "anonymize ledger", version 1, or its entries.',
				  HINT = 'Pass the text that anonymize.ledger_export() returned, unchanged.';
	END IF;

	v_fp := @extschema@._key_fingerprint();
	IF v_fp IS NULL OR v_fp IS DISTINCT FROM v_doc ->> 'key_fingerprint' THEN
		RAISE EXCEPTION 'the ledger was made with another digest key'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('The document''s key fingerprint is %s; this database''s is %s.',
								  coalesce(v_doc ->> 'key_fingerprint', 'missing'), coalesce(v_fp, 'missing (no key)')),
				  HINT = 'Its digests would match nothing here: restore anonymize.secret from the same database (a dump or backup of it carries the key), then import again.';
	END IF;

	-- every entry well formed, or nothing
	SELECT count(*) INTO v_bad
	FROM jsonb_array_elements(v_doc -> 'entries') e
	WHERE jsonb_typeof(e) IS DISTINCT FROM 'object'
	   OR coalesce(e ->> 'request_id', '') !~ '^[1-9][0-9]{0,17}$'
	   OR coalesce(e ->> 'kind', '') NOT IN ('phone', 'email')
	   OR coalesce(e ->> 'digest', '') !~ '^[0-9a-f]{64}$'
	   OR coalesce(e ->> 'to_date', '') !~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}$'
	   OR coalesce(e ->> 'done_at', '') = ''
	   OR jsonb_typeof(e -> 'scopes') IS DISTINCT FROM 'array'
	   OR jsonb_array_length(e -> 'scopes') = 0
	   OR EXISTS (SELECT FROM jsonb_array_elements_text(e -> 'scopes') s
				  WHERE s NOT IN ('archive', 'sms_survey', 'raw_data'));
	IF v_bad > 0 THEN
		RAISE EXCEPTION 'malformed ledger document'
			USING ERRCODE = 'invalid_text_representation',
				  DETAIL = format('%s of its entries lack a request id, kind, digest, date or scope.', v_bad),
				  HINT = 'Pass the text that anonymize.ledger_export() returned, unchanged.';
	END IF;

	BEGIN
		CREATE TEMPORARY TABLE anonymize_ledger_import ON COMMIT DROP AS
		SELECT (e ->> 'request_id')::bigint AS request_id, e ->> 'kind' AS kind,
			   decode(e ->> 'digest', 'hex') AS digest, (e ->> 'to_date')::date AS to_date,
			   (e -> 'scopes') ? 'archive' AS archive, (e -> 'scopes') ? 'sms_survey' AS sms_survey,
			   (e -> 'scopes') ? 'raw_data' AS raw_data, (e ->> 'done_at')::timestamptz AS done_at
		FROM jsonb_array_elements(v_doc -> 'entries') e;
	EXCEPTION WHEN data_exception THEN
		RAISE EXCEPTION 'malformed ledger document'
			USING ERRCODE = 'invalid_text_representation',
				  DETAIL = 'A date or time of an entry is not valid.',
				  HINT = 'Pass the text that anonymize.ledger_export() returned, unchanged.';
	END;

	-- a request id that names something else here: refused
	SELECT min(i.request_id) INTO v_bad
	FROM anonymize_ledger_import i
	WHERE EXISTS (SELECT FROM @extschema@.ledger l
				  WHERE l.request_id = i.request_id AND l.kind = i.kind AND l.digest <> i.digest)
	   OR EXISTS (SELECT FROM @extschema@.anonymize_request r
				  WHERE r.id = i.request_id AND r.status <> 'Done')
	   OR (SELECT count(*) FROM anonymize_ledger_import j
		   WHERE j.request_id = i.request_id AND j.kind = i.kind) > 1;
	IF v_bad IS NOT NULL THEN
		RAISE EXCEPTION 'ledger entry of request % conflicts with this database', v_bad
			USING ERRCODE = 'unique_violation',
				  DETAIL = 'This database has another request, or another digest, under that id.',
				  HINT = 'Import the ledger before filing new requests in a restored database.';
	END IF;

	INSERT INTO @extschema@.ledger (request_id, kind, digest, to_date, archive, sms_survey,
									raw_data, done_at, source)
	SELECT request_id, kind, digest, to_date, archive, sms_survey, raw_data, done_at, 'import'
	FROM anonymize_ledger_import
	ON CONFLICT (request_id, kind) DO NOTHING;
	GET DIAGNOSTICS v_added = ROW_COUNT;
	DROP TABLE anonymize_ledger_import;

	-- new requests here must not take the ids of imported ones
	SELECT max(request_id) INTO v_max FROM @extschema@.ledger;
	IF v_max IS NOT NULL THEN
		PERFORM setval('@extschema@.anonymize_request_id_seq', v_max)
		FROM @extschema@.anonymize_request_id_seq s
		WHERE NOT s.is_called OR s.last_value < v_max;
	END IF;

	INSERT INTO @extschema@.ledger_state AS s (id, full_recheck, imports)
	VALUES (1, true, 1)
	ON CONFLICT (id) DO UPDATE SET full_recheck = true, imports = s.imports + 1,
		updated_at = now();
	PERFORM @extschema@._ledger_changed();
	RETURN v_added;
END
$$;
COMMENT ON FUNCTION @extschema@.ledger_import(text) IS
'adds the entries of a ledger_export() document that this database lacks (refused when made with another key) and makes the next run re-check every row; returns how many it added';

REVOKE ALL ON TABLE @extschema@.ledger FROM PUBLIC;
REVOKE ALL ON TABLE @extschema@.ledger_state FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._key_fingerprint() FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._ledger_changed() FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.ledger_export() FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.ledger_import(text) FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('@extschema@.ledger', '');

-- ---------------------------------------------------------------
-- An index the run may probe instead of scanning a phone target
-- ---------------------------------------------------------------

-- A btree index over canonical_phone(col, '<country_code>', '<trunk_prefix>'),
-- with the settings in force, lets the run and preview() look up each
-- requested number instead of reading the whole table (doc/indexes.md).
-- The settings are arguments, so the function is IMMUTABLE; it never
-- raises an error, so that the index accepts every row.
CREATE FUNCTION @extschema@.canonical_phone(value text, country_code text, trunk_prefix text)
RETURNS text
AS 'MODULE_PATHNAME', 'anonymize_canonical_phone'
LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.canonical_phone(text, text, text) IS
'canonical form (+ and digits) the run reads in an archive value with these settings, or NULL; for an index the run probes';
REVOKE ALL ON FUNCTION @extschema@.canonical_phone(text, text, text) FROM PUBLIC;

-- ---------------------------------------------------------------
-- Citus tables: matching, rewriting and scrubbing on the shards
-- ---------------------------------------------------------------

-- The run's distributed statements call these on every shard of a Citus
-- target: plan holds keyed digests of the requests' identifiers (under a
-- key made for that statement alone), their cut-offs and the settings of
-- the canonical forms; never an identifier.  IMMUTABLE: the answer
-- depends on the arguments only, as Citus requires in a distributed UPDATE.
CREATE FUNCTION @extschema@._citus_match(value text, at date, plan bytea)
RETURNS integer[]
LANGUAGE C IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'anonymize_citus_match';
CREATE FUNCTION @extschema@._citus_match(value text, at timestamp, plan bytea)
RETURNS integer[]
LANGUAGE C IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'anonymize_citus_match';
CREATE FUNCTION @extschema@._citus_match(value text, at timestamptz, plan bytea)
RETURNS integer[]
LANGUAGE C IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'anonymize_citus_match';
COMMENT ON FUNCTION @extschema@._citus_match(text, date, bytea) IS
'the run on a Citus table: the indexes of the plan''s requests that a row matches, or NULL';
COMMENT ON FUNCTION @extschema@._citus_match(text, timestamp, bytea) IS
'the run on a Citus table: the indexes of the plan''s requests that a row matches, or NULL';
COMMENT ON FUNCTION @extschema@._citus_match(text, timestamptz, bytea) IS
'the run on a Citus table: the indexes of the plan''s requests that a row matches, or NULL';

CREATE FUNCTION @extschema@._citus_scrub(tbl regclass)
RETURNS bigint
LANGUAGE C STRICT
AS 'MODULE_PATHNAME', 'anonymize_citus_scrub';
COMMENT ON FUNCTION @extschema@._citus_scrub(regclass) IS
'the run on a Citus table: zeroes the free space of every page of a vacuumed shard placement';

-- One target's rewrite, in one transaction: the rows per request (each
-- counted for the lowest id it matches), then the UPDATE, whose row count
-- comes last as request -1.  Called as a function so that Citus runs both
-- statements in one transaction on the same shard connections.
CREATE FUNCTION @extschema@._citus_rewrite(tbl regclass, col text, time_col text,
										   is_number boolean, plan bytea, value text)
RETURNS TABLE (req integer, n bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_match		text;
	v_rows		bigint;
BEGIN
	v_match := format(CASE WHEN is_number
					  THEN '@extschema@._citus_match(CASE WHEN (t.%1$I)::text ~ ''^[0-9]+$'' THEN ''+'' || (t.%1$I)::text END, t.%2$I, $1)'
					  ELSE '@extschema@._citus_match((t.%1$I)::text, t.%2$I, $1)' END,
					  col, time_col);
	RETURN QUERY EXECUTE format('SELECT m[1], count(*) FROM (SELECT %s AS m FROM %s AS t) AS s'
								' WHERE m IS NOT NULL GROUP BY 1', v_match, tbl) USING plan;
	-- erase 'null': a NULL of the column's own type
	EXECUTE format('UPDATE %s AS t SET %I = %s WHERE %s IS NOT NULL', tbl, col,
				   CASE WHEN value IS NULL THEN 'NULL' ELSE '$2' END, v_match)
		USING plan, value;
	GET DIAGNOSTICS v_rows = ROW_COUNT;
	req := -1;
	n := v_rows;
	RETURN NEXT;
END
$$;
COMMENT ON FUNCTION @extschema@._citus_rewrite(regclass, text, text, boolean, bytea, text) IS
'the run on a Citus table: counts the matching rows per request on every shard, then rewrites them';

REVOKE ALL ON FUNCTION @extschema@._citus_match(text, date, bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._citus_match(text, timestamp, bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._citus_match(text, timestamptz, bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._citus_scrub(regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._citus_rewrite(regclass, text, text, boolean, bytea, text) FROM PUBLIC;

-- ---------------------------------------------------------------
-- Citus tables: the search guard on the shards
-- ---------------------------------------------------------------

-- The guard of a protected Citus table runs where its shards are, on
-- nodes whose pages of requests are empty.  The coordinator keeps what it
-- needs in two Citus reference tables (made so by the first protect() of
-- a Citus table), written in the transaction that changes a request: the
-- keyed digests of the identifiers of every Waiting, Running or Held
-- request, per scope, with its to_date and the end of that day in
-- anonymize.timezone; and the key of these digests (never the key of
-- anonymize.secret) with the settings of the canonical forms.  Derived
-- data, rebuilt from the page by _citus_guard_sync(): not dumped.
CREATE TABLE @extschema@.citus_guard (
	digest			bytea NOT NULL,		-- HMAC-SHA256 of kind ':' canonical form
	scope			"char" NOT NULL,	-- 'a'rchive, 's'ms_survey, 'r'aw_data
	to_date			date NOT NULL,
	to_end			timestamptz NOT NULL	-- the end of to_date in anonymize.timezone
);
COMMENT ON TABLE @extschema@.citus_guard IS
'the search guard on Citus tables: keyed digests of the identifiers of requests not yet Done, per scope (a Citus reference table once a Citus table is protected)';
CREATE TABLE @extschema@.citus_guard_key (
	key				bytea NOT NULL,
	country_code	text NOT NULL,
	trunk_prefix	text NOT NULL
);
COMMENT ON TABLE @extschema@.citus_guard_key IS
'the search guard on Citus tables: the key of its digests and the settings of the canonical forms (a Citus reference table once a Citus table is protected)';
REVOKE ALL ON @extschema@.citus_guard, @extschema@.citus_guard_key FROM PUBLIC;

-- The row filter of a protected Citus table: what _guard_visible() answers
-- on one node, on whichever node runs it (on a worker, from the local
-- placements of the two tables above).  EXECUTE goes to the roles that may
-- read a protected Citus table, on every node (see _guard_grants()).
CREATE FUNCTION @extschema@._citus_guard_visible(value text, at date, scope "char", kind "char")
RETURNS boolean
AS 'MODULE_PATHNAME', 'anonymize_citus_guard_visible'
LANGUAGE C STABLE PARALLEL SAFE COST 10;
CREATE FUNCTION @extschema@._citus_guard_visible(value text, at timestamp, scope "char", kind "char")
RETURNS boolean
AS 'MODULE_PATHNAME', 'anonymize_citus_guard_visible'
LANGUAGE C STABLE PARALLEL SAFE COST 10;
CREATE FUNCTION @extschema@._citus_guard_visible(value text, at timestamptz, scope "char", kind "char")
RETURNS boolean
AS 'MODULE_PATHNAME', 'anonymize_citus_guard_visible'
LANGUAGE C STABLE PARALLEL SAFE COST 10;
COMMENT ON FUNCTION @extschema@._citus_guard_visible(text, date, "char", "char") IS
'the row filter of protect() on a Citus table: false for a row the run will rewrite and has not yet, on any node';
COMMENT ON FUNCTION @extschema@._citus_guard_visible(text, timestamp, "char", "char") IS
'the row filter of protect() on a Citus table: false for a row the run will rewrite and has not yet, on any node';
COMMENT ON FUNCTION @extschema@._citus_guard_visible(text, timestamptz, "char", "char") IS
'the row filter of protect() on a Citus table: false for a row the run will rewrite and has not yet, on any node';

CREATE FUNCTION @extschema@._citus_guard_entries(key bytea)
RETURNS TABLE (digest bytea, scope "char", to_date date, to_end timestamptz)
AS 'MODULE_PATHNAME', 'anonymize_citus_guard_entries'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION @extschema@._citus_guard_entries(bytea) IS
'the rows of citus_guard for the requests not yet Done, under a key, with this node''s settings';
CREATE FUNCTION @extschema@._citus_guard_key_new()
RETURNS bytea
AS 'MODULE_PATHNAME', 'anonymize_citus_guard_key_new'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@._citus_guard_key_new() IS
'a random key for the digests of the search guard on Citus tables';

-- Is this node a Citus worker (Citus installed, not the coordinator)?
CREATE FUNCTION @extschema@._citus_worker_node()
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_worker	boolean;
BEGIN
	IF to_regproc('pg_catalog.citus_is_coordinator') IS NULL THEN
		RETURN false;
	END IF;
	EXECUTE 'SELECT NOT pg_catalog.citus_is_coordinator()' INTO v_worker;
	RETURN coalesce(v_worker, false);
END
$$;
COMMENT ON FUNCTION @extschema@._citus_worker_node() IS
'true on a Citus worker node, false on the coordinator and without Citus';

-- Is the guard on Citus tables in use here: the coordinator, with
-- citus_guard a reference table?
CREATE FUNCTION @extschema@._citus_guard_active()
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_active	boolean;
BEGIN
	IF to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
		RETURN false;
	END IF;
	EXECUTE 'SELECT EXISTS (SELECT FROM pg_catalog.pg_dist_partition WHERE logicalrelid = $1)'
		INTO v_active USING '@extschema@.citus_guard'::regclass;
	RETURN v_active AND NOT @extschema@._citus_worker_node();
END
$$;
COMMENT ON FUNCTION @extschema@._citus_guard_active() IS
'true on a Citus coordinator where a Citus table is protected (citus_guard is a reference table)';

-- Make citus_guard and citus_guard_key what the page says, in the caller's
-- transaction (Citus writes every placement with two-phase commit): the
-- key made once, the settings of the canonical forms, and the digests
-- rewritten when they differ.  Only digests go to the workers.  Writers
-- are serialized, so that each one reads the page as the last left it.
CREATE FUNCTION @extschema@._citus_guard_sync()
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_key		bytea;
	v_cc		text := coalesce(current_setting('anonymize.country_code', true), '');
	v_tp		text := coalesce(current_setting('anonymize.trunk_prefix', true), '');
	v_kcc		text;
	v_ktp		text;
	v_d			bytea[];
	v_s			"char"[];
	v_t			date[];
	v_e			timestamptz[];
	v_want		text[];
	v_have		text[];
BEGIN
	IF NOT @extschema@._citus_guard_active() THEN
		RETURN;
	END IF;
	PERFORM pg_advisory_xact_lock(1634627183, 1735289188);
	SELECT k.key, k.country_code, k.trunk_prefix INTO v_key, v_kcc, v_ktp
	FROM @extschema@.citus_guard_key k LIMIT 1;
	IF v_key IS NULL THEN
		v_key := @extschema@._citus_guard_key_new();
		INSERT INTO @extschema@.citus_guard_key (key, country_code, trunk_prefix)
		VALUES (v_key, v_cc, v_tp);
	ELSIF v_kcc IS DISTINCT FROM v_cc OR v_ktp IS DISTINCT FROM v_tp THEN
		UPDATE @extschema@.citus_guard_key SET country_code = v_cc, trunk_prefix = v_tp;
	END IF;
	SELECT array_agg(e.digest ORDER BY e.digest, e.scope, e.to_date, e.to_end),
		   array_agg(e.scope ORDER BY e.digest, e.scope, e.to_date, e.to_end),
		   array_agg(e.to_date ORDER BY e.digest, e.scope, e.to_date, e.to_end),
		   array_agg(e.to_end ORDER BY e.digest, e.scope, e.to_date, e.to_end)
	INTO v_d, v_s, v_t, v_e
	FROM @extschema@._citus_guard_entries(v_key) e;
	SELECT array_agg(format('%s %s %s %s', encode(g.digest, 'hex'), g.scope, g.to_date, g.to_end)
					 ORDER BY g.digest, g.scope, g.to_date, g.to_end)
	INTO v_have FROM @extschema@.citus_guard g;
	SELECT array_agg(format('%s %s %s %s', encode(w.d, 'hex'), w.s, w.t, w.e) ORDER BY w.n)
	INTO v_want FROM unnest(v_d, v_s, v_t, v_e) WITH ORDINALITY AS w(d, s, t, e, n);
	IF v_want IS DISTINCT FROM v_have THEN
		DELETE FROM @extschema@.citus_guard;
		IF v_d IS NOT NULL THEN
			INSERT INTO @extschema@.citus_guard (digest, scope, to_date, to_end)
			SELECT * FROM unnest(v_d, v_s, v_t, v_e);
		END IF;
	END IF;
END
$$;
COMMENT ON FUNCTION @extschema@._citus_guard_sync() IS
'on a Citus coordinator with protected Citus tables: writes the digests of the requests not yet Done to citus_guard';

-- The page's writes (the run's own call _citus_guard_sync() themselves)
CREATE FUNCTION @extschema@._citus_guard_trigger()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM @extschema@._citus_guard_sync();
	RETURN NULL;
END
$$;
COMMENT ON FUNCTION @extschema@._citus_guard_trigger() IS
'after a statement on the page: the search guard on Citus tables follows it';
CREATE TRIGGER anonymize_citus_guard
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON @extschema@.anonymize_request
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._citus_guard_trigger();

-- The first protect() of a Citus table: both tables become reference
-- tables, then get their key and digests.
CREATE FUNCTION @extschema@._citus_guard_setup()
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NOT @extschema@._citus_guard_active() THEN
		PERFORM create_reference_table('@extschema@.citus_guard_key');
		PERFORM create_reference_table('@extschema@.citus_guard');
	END IF;
	PERFORM @extschema@._citus_guard_sync();
END
$$;
COMMENT ON FUNCTION @extschema@._citus_guard_setup() IS
'the first protect() of a Citus table: citus_guard and citus_guard_key become Citus reference tables';

-- On a worker: EXECUTE on the guard of Citus tables exactly for these
-- roles, and USAGE on this schema for them.  A role not yet here (made in
-- the coordinator's transaction, which this one cannot see) is an error.
CREATE FUNCTION @extschema@._citus_guard_grant(roles text[])
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r			record;
	v_missing	text;
BEGIN
	SELECT string_agg(x, ', ' ORDER BY x) INTO v_missing
	FROM unnest(roles) x WHERE NOT EXISTS (SELECT FROM pg_roles o WHERE o.rolname = x);
	IF v_missing IS NOT NULL THEN
		RAISE EXCEPTION 'role % does not exist on this Citus worker', v_missing
			USING ERRCODE = 'undefined_object',
				  HINT = 'Create the role in a transaction of its own, then grant it SELECT on the protected table.';
	END IF;
	FOR r IN
		SELECT p.oid::regprocedure AS fn, a.grantee
		FROM pg_proc p, LATERAL aclexplode(p.proacl) a
		WHERE p.pronamespace = '@extschema@'::regnamespace AND p.proname = '_citus_guard_visible'
		  AND p.proacl IS NOT NULL AND a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner
		  AND (a.grantee = 0 OR NOT EXISTS (SELECT FROM pg_roles o WHERE o.oid = a.grantee
											AND o.rolname = ANY (roles)))
	LOOP
		EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM %s', r.fn,
					   CASE WHEN r.grantee = 0 THEN 'PUBLIC'
							ELSE quote_ident((SELECT rolname FROM pg_roles WHERE oid = r.grantee)) END);
	END LOOP;
	FOR r IN
		SELECT p.oid::regprocedure AS fn, o.rolname
		FROM pg_proc p, pg_roles o
		WHERE p.pronamespace = '@extschema@'::regnamespace AND p.proname = '_citus_guard_visible'
		  AND o.rolname = ANY (roles) AND o.oid <> p.proowner
		  AND NOT has_function_privilege(o.oid, p.oid, 'EXECUTE')
	LOOP
		EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', r.fn, r.rolname);
	END LOOP;
	FOR r IN
		SELECT o.rolname FROM pg_roles o
		WHERE o.rolname = ANY (roles)
		  AND NOT has_schema_privilege(o.oid, '@extschema@'::regnamespace, 'USAGE')
	LOOP
		EXECUTE format('GRANT USAGE ON SCHEMA @extschema@ TO %I', r.rolname);
	END LOOP;
END
$$;
COMMENT ON FUNCTION @extschema@._citus_guard_grant(text[]) IS
'on a Citus worker: EXECUTE on the guard of Citus tables for exactly these roles, and USAGE on the schema';

-- On the coordinator: give every worker the grants of the guard of Citus
-- tables that this node has (run_command_on_workers(), one connection a
-- worker: the workers' own event triggers keep out of it, see
-- _guard_grants()).
CREATE FUNCTION @extschema@._citus_guard_push_grants()
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_roles		text[];
	r			record;
BEGIN
	IF to_regproc('pg_catalog.run_command_on_workers') IS NULL OR @extschema@._citus_worker_node() THEN
		RETURN;
	END IF;
	SELECT coalesce(array_agg(DISTINCT o.rolname ORDER BY o.rolname), '{}') INTO v_roles
	FROM pg_proc p, LATERAL aclexplode(p.proacl) a, pg_roles o
	WHERE p.pronamespace = '@extschema@'::regnamespace AND p.proname = '_citus_guard_visible'
	  AND p.proacl IS NOT NULL AND a.privilege_type = 'EXECUTE'
	  AND a.grantee <> p.proowner AND o.oid = a.grantee;
	FOR r IN
		EXECUTE 'SELECT nodename, nodeport, success, result FROM pg_catalog.run_command_on_workers($1)'
		USING format('SELECT @extschema@._citus_guard_grant(%L::text[])', v_roles)
	LOOP
		IF NOT r.success THEN
			RAISE EXCEPTION 'could not give the search guard''s grants to the Citus worker %:%', r.nodename, r.nodeport
				USING ERRCODE = 'connection_failure',
					  DETAIL = r.result,
					  HINT = 'Every worker must be up to change who may read a protected Citus table.';
		END IF;
	END LOOP;
END
$$;
COMMENT ON FUNCTION @extschema@._citus_guard_push_grants() IS
'on a Citus coordinator: the grants of the guard of Citus tables given to every worker';

-- _guard_grants(): as in 1.0, and the guard of Citus tables
-- (_citus_guard_visible) goes to the roles that may read a protected
-- Citus table.  On a Citus worker it leaves that function alone: the
-- coordinator gives its grants to the workers once a change, over one
-- connection each (_citus_guard_push_grants()).  The workers' own event
-- triggers fire once per shard of a GRANT, on several connections of the
-- same distributed transaction, and would write the same row of pg_proc
-- from each: a distributed deadlock.
CREATE OR REPLACE FUNCTION @extschema@._guard_grants()
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r			record;
	v_worker	boolean := @extschema@._citus_worker_node();
	v_push		boolean := false;
BEGIN
	FOR r IN
		WITH pol AS (
			SELECT p.polrelid,
				   CASE WHEN EXISTS (SELECT FROM pg_depend d, pg_proc f
									 WHERE d.classid = 'pg_policy'::regclass AND d.objid = p.oid
									   AND d.refclassid = 'pg_proc'::regclass AND f.oid = d.refobjid
									   AND f.pronamespace = '@extschema@'::regnamespace
									   AND f.proname = '_citus_guard_visible')
						THEN '_citus_guard_visible' ELSE '_guard_visible' END AS fname
			FROM pg_policy p
			WHERE p.polname = 'anonymize_guard'
		), wanted AS (
			SELECT DISTINCT pol.fname, g AS grantee
			FROM pol, LATERAL @extschema@._guard_readers(pol.polrelid) g
			WHERE g <> 0
		), fn AS (
			SELECT p.oid, p.proname, p.proowner, p.proacl
			FROM pg_proc p
			WHERE p.pronamespace = '@extschema@'::regnamespace
			  AND (p.proname = '_guard_visible'
				   OR (p.proname = '_citus_guard_visible' AND NOT v_worker))
		), have AS (
			SELECT fn.oid AS fn, fn.proname, a.grantee
			FROM fn, LATERAL aclexplode(fn.proacl) a
			WHERE fn.proacl IS NOT NULL AND a.privilege_type = 'EXECUTE'
			  AND a.grantee <> fn.proowner
		)
		SELECT 'GRANT' AS verb, fn.oid AS fn, fn.proname::text AS proname, w.grantee
		FROM fn, wanted w
		WHERE w.fname = fn.proname
		  AND NOT EXISTS (SELECT FROM have h WHERE h.fn = fn.oid AND h.grantee = w.grantee)
		  AND w.grantee <> fn.proowner
		UNION ALL
		SELECT 'REVOKE', h.fn, h.proname::text, h.grantee
		FROM have h
		WHERE NOT EXISTS (SELECT FROM wanted w WHERE w.grantee = h.grantee AND w.fname = h.proname)
	LOOP
		IF r.grantee = 0 THEN
			EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', r.fn::regprocedure);
		ELSIF r.verb = 'GRANT' THEN
			EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', r.fn::regprocedure,
						   (SELECT rolname FROM pg_roles WHERE oid = r.grantee));
		ELSE
			EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM %I', r.fn::regprocedure,
						   (SELECT rolname FROM pg_roles WHERE oid = r.grantee));
		END IF;
		v_push := v_push OR r.proname = '_citus_guard_visible';
	END LOOP;
	IF v_push THEN
		PERFORM @extschema@._citus_guard_push_grants();
	END IF;
END
$$;

REVOKE ALL ON FUNCTION @extschema@._citus_guard_visible(text, date, "char", "char") FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._citus_guard_visible(text, timestamp, "char", "char") FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._citus_guard_visible(text, timestamptz, "char", "char") FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._citus_guard_entries(bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._citus_guard_key_new() FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._citus_worker_node() FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._citus_guard_active() FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._citus_guard_sync() FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._citus_guard_trigger() FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._citus_guard_setup() FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._citus_guard_grant(text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@._citus_guard_push_grants() FROM PUBLIC;

-- ---------------------------------------------------------------
-- Grants of the functions this update re-created: given back
-- ---------------------------------------------------------------

-- The DBA's grants from before the update are given again, and the
-- extension's own initial privileges (pg_init_privs) are set to what a
-- fresh install records, so that pg_dump of the updated database dumps
-- those grants as the DBA's, exactly as it would after a fresh install
-- and the same GRANTs.
DO $$
DECLARE
	v_fn		pg_catalog.regprocedure;
	v_saved		pg_catalog.aclitem[];
	v_fresh		pg_catalog.aclitem[];
	v_grant		record;
BEGIN
	FOR v_fn IN SELECT unnest(ARRAY['@extschema@.add_target(regclass, name, text, text, name, text, text)',
									'@extschema@.preview(bigint)',
									'@extschema@.status()']::pg_catalog.regprocedure[])
	LOOP
		v_saved := nullif(pg_catalog.current_setting('anonymize_update.acl_' ||
							  (SELECT p.proname FROM pg_catalog.pg_proc p WHERE p.oid = v_fn), true), '');
		SELECT p.proacl INTO v_fresh FROM pg_catalog.pg_proc p WHERE p.oid = v_fn;
		FOR v_grant IN
			SELECT a.grantee, a.is_grantable
			FROM pg_catalog.aclexplode(v_saved) a, pg_catalog.pg_proc p
			WHERE p.oid = v_fn AND a.grantee <> p.proowner AND a.privilege_type = 'EXECUTE'
		LOOP
			EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %s%s', v_fn,
				CASE WHEN v_grant.grantee = 0 THEN 'PUBLIC'
					 ELSE pg_catalog.quote_ident((SELECT r.rolname FROM pg_catalog.pg_roles r
												  WHERE r.oid = v_grant.grantee)) END,
				CASE WHEN v_grant.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
		END LOOP;
		UPDATE pg_catalog.pg_init_privs i SET initprivs = v_fresh
		WHERE i.objoid = v_fn AND i.classoid = 'pg_catalog.pg_proc'::pg_catalog.regclass
		  AND i.objsubid = 0;
	END LOOP;
END
$$;
