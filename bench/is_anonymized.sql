-- bench/is_anonymized.sql: the measuring functions of bench/is_anonymized.sh.
-- Times are taken inside the server (clock_timestamp), so psql and the
-- network are not measured.  Each function returns seconds.

-- requests lo..hi on the page; every other one has an email
CREATE FUNCTION bench_page(lo int, hi int) RETURNS void LANGUAGE sql AS $$
	INSERT INTO anonymize.anonymize_request (phone, email, to_date)
	SELECT (40000000 + k)::text, CASE WHEN k % 2 = 0 THEN 'user' || k || '@example.no' END,
	       current_date - 1
	FROM generate_series(lo, hi) k;
$$;

-- calls values in four formats (national, +47, 0047 spaced, email), a
-- quarter to a half of them filed when the page holds 100,000 requests;
-- with_hook = false measures generating the values alone
CREATE FUNCTION bench_calls(calls int, with_hook boolean) RETURNS float8
LANGUAGE plpgsql AS $$
DECLARE
	t0	timestamptz := clock_timestamp();
	c	bigint;
BEGIN
	IF with_hook THEN
		SELECT count(*) FILTER (WHERE anonymize.is_anonymized(v)) INTO c
		FROM (SELECT CASE i % 4 WHEN 0 THEN (40000000 + i % 200000)::text
		                        WHEN 1 THEN '+47' || (40000000 + i % 200000)
		                        WHEN 2 THEN '0047 ' || (40000000 + i % 200000)
		                        ELSE 'user' || (i % 200000) || '@example.no' END AS v
		      FROM generate_series(1, calls) i) s;
	ELSE
		SELECT count(*) FILTER (WHERE v IS NOT NULL) INTO c
		FROM (SELECT CASE i % 4 WHEN 0 THEN (40000000 + i % 200000)::text
		                        WHEN 1 THEN '+47' || (40000000 + i % 200000)
		                        WHEN 2 THEN '0047 ' || (40000000 + i % 200000)
		                        ELSE 'user' || (i % 200000) || '@example.no' END AS v
		      FROM generate_series(1, calls) i) s;
	END IF;
	RETURN extract(epoch FROM clock_timestamp() - t0);
END $$;

-- the archive: 2M calls over two years from 500,000 numbers in three
-- formats, 20 queues; archive_plain unprotected, archive_guarded the same
-- rows under protect(); an index on the caller of each (the driver
-- vacuums and analyzes them)
CREATE FUNCTION bench_archive(n int) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	CREATE TABLE archive_plain (id bigint, caller text, queue text, started_at timestamptz NOT NULL);
	INSERT INTO archive_plain
	SELECT i, CASE i % 3 WHEN 0 THEN '+47' || (40000000 + (i * 7919) % 500000)
	                     WHEN 1 THEN (40000000 + (i * 7919) % 500000)::text
	                     ELSE '0047 ' || (40000000 + (i * 7919) % 500000) END,
	       'q' || (i % 20), now() - (i % 730) * interval '1 day' - (i % 86400) * interval '1 second'
	FROM generate_series(1, n::bigint) i;
	CREATE TABLE archive_guarded AS SELECT * FROM archive_plain;
	CREATE INDEX ON archive_plain (caller);
	CREATE INDEX ON archive_guarded (caller);
	PERFORM anonymize.add_target('archive_guarded', 'caller', 'phone', 'archive', 'started_at');
	GRANT SELECT ON archive_plain, archive_guarded TO bench_reader;
	PERFORM anonymize.protect('archive_guarded');
END $$;

-- a search by queue over the whole table (sequential scan)
CREATE FUNCTION bench_full(tbl regclass) RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE
	t0	timestamptz := clock_timestamp();
	c	bigint;
BEGIN
	EXECUTE format('SELECT count(*) FROM (SELECT id, caller, started_at FROM %s WHERE queue = %L) s', tbl, 'q7') INTO c;
	RETURN extract(epoch FROM clock_timestamp() - t0);
END $$;

-- every row read, no condition of the search's own (worst case: the guard
-- runs on each of the 2M rows)
CREATE FUNCTION bench_all(tbl regclass) RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE
	t0	timestamptz := clock_timestamp();
	c	bigint;
BEGIN
	EXECUTE format('SELECT count(caller) FROM %s', tbl) INTO c;
	RETURN extract(epoch FROM clock_timestamp() - t0);
END $$;

-- searches by number through the index; returns seconds per search
CREATE FUNCTION bench_lookup(tbl regclass, searches int) RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE
	t0	timestamptz := clock_timestamp();
	c	bigint;
	total bigint := 0;
BEGIN
	FOR k IN 1 .. searches LOOP
		EXECUTE format('SELECT count(*) FROM %s WHERE caller = $1', tbl) INTO c
			USING '+47' || (40000000 + (k * 104729) % 500000);
		total := total + c;
	END LOOP;
	RETURN extract(epoch FROM clock_timestamp() - t0) / searches;
END $$;

GRANT EXECUTE ON FUNCTION bench_full(regclass), bench_all(regclass), bench_lookup(regclass, int) TO bench_reader;
