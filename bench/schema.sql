-- bench/schema.sql: the synthetic contact-centre archive of the benchmark.
--
-- psql -v rows=N: N calls, plus chats (N/10), emails (N/10), SMS answers
-- (N/5) and raw statistics events (N/2, partitioned by half-year).  Every
-- row belongs to one of N/3 "persons", spread over the table by a
-- multiplicative hash, so that a person has about three calls and a few
-- other rows scattered over the whole archive.  Numbers are stored the way
-- real switchboards store them: +47..., 0047..., national, spaced,
-- "tel:" URIs, withheld callers, and one person in twenty is Swedish
-- (+46, never national).  Emails come in mixed case, with display names
-- and stray blanks.  Generated with generate_series, in SQL only.

\set ON_ERROR_STOP 1
SET client_min_messages = warning;

CREATE SCHEMA bench;
CREATE SCHEMA archive;
CREATE SCHEMA sms;
CREATE SCHEMA raw;

-- how many persons, and the last person handed to a request
SELECT greatest(:rows / 3, 50) AS persons \gset
CREATE TABLE bench.param (persons bigint NOT NULL, next_person bigint NOT NULL);
INSERT INTO bench.param VALUES (:persons, 1);

-- the person that row r of a table (salt s) belongs to
CREATE FUNCTION bench.person(r bigint, s bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN ((r * 2654435761 + s * 40503) % :persons) + 1;

-- country code and national number of person p
CREATE FUNCTION bench.cc(p bigint) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN p % 20 = 0 THEN '46' ELSE '47' END;

CREATE FUNCTION bench.national(p bigint) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN p % 20 = 0 THEN (700000000 + p)::text ELSE (40000000 + p)::text END;

-- the phone number of person p as row r stores it
CREATE FUNCTION bench.phone_form(p bigint, r bigint) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE r % 8
	WHEN 0 THEN '+' || bench.cc(p) || bench.national(p)
	WHEN 1 THEN '00' || bench.cc(p) || bench.national(p)
	WHEN 2 THEN CASE WHEN bench.cc(p) = '47' THEN bench.national(p)
				ELSE '00' || bench.cc(p) || bench.national(p) END
	WHEN 3 THEN '+' || bench.cc(p) || ' ' || substr(bench.national(p), 1, 3) || ' '
				|| substr(bench.national(p), 4, 2) || ' ' || substr(bench.national(p), 6)
	WHEN 4 THEN 'tel:+' || bench.cc(p) || bench.national(p)
	WHEN 5 THEN CASE WHEN bench.cc(p) = '47'
				THEN substr(bench.national(p), 1, 2) || ' ' || substr(bench.national(p), 3, 2) || ' '
					 || substr(bench.national(p), 5, 2) || ' ' || substr(bench.national(p), 7)
				ELSE '+' || bench.cc(p) || '-' || bench.national(p) END
	WHEN 6 THEN '+' || bench.cc(p) || bench.national(p)
	ELSE CASE WHEN r % 5 = 2 THEN 'Unknown' ELSE '00' || bench.cc(p) || bench.national(p) END
END;

-- the email address of person p, and how row r stores it
CREATE FUNCTION bench.email(p bigint) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN 'user' || p || '@example' || (p % 50) || '.no';

CREATE FUNCTION bench.email_form(p bigint, r bigint) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE r % 5
	WHEN 0 THEN bench.email(p)
	WHEN 1 THEN 'User' || p || '@Example' || (p % 50) || '.NO'
	WHEN 2 THEN '"User ' || p || '" <' || bench.email(p) || '>'
	WHEN 3 THEN ' ' || bench.email(p) || ' '
	ELSE upper(bench.email(p))
END;

-- when row r of n happened: spread over the last two years, newest last
CREATE FUNCTION bench.at(r bigint, n bigint) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE
RETURN date_trunc('day', now()) - interval '730 days'
	+ (r::float8 / greatest(n, 1)) * interval '730 days' + (r % 86400) * interval '1 second';

CREATE TABLE archive.calls (
	id			bigint PRIMARY KEY,
	started_at	timestamptz NOT NULL,
	queue		text NOT NULL,
	agent		text,
	caller		text,
	callee		text NOT NULL,
	duration	integer NOT NULL,
	recording	text
);

CREATE TABLE archive.chats (
	id			bigint PRIMARY KEY,
	started_at	timestamptz NOT NULL,
	queue		text NOT NULL,
	chatter_id	text,
	transcript	text
);

CREATE TABLE archive.emails (
	id			bigint PRIMARY KEY,
	received_at	timestamptz NOT NULL,
	queue		text NOT NULL,
	from_addr	text,
	subject		text
);

CREATE TABLE sms.answers (
	id			bigint PRIMARY KEY,
	answered_at	timestamptz NOT NULL,
	phone		text,
	score		integer,
	answer		text
);

CREATE TABLE raw.events (
	id			bigint NOT NULL,
	ts			timestamptz NOT NULL,
	event		text NOT NULL,
	number		text,
	queue		text
) PARTITION BY RANGE (ts);

DO $$
DECLARE
	d date := date_trunc('month', now() - interval '25 months')::date;
BEGIN
	WHILE d <= now()::date + 1 LOOP
		EXECUTE format('CREATE TABLE raw.%I PARTITION OF raw.events FOR VALUES FROM (%L) TO (%L)',
					   'events_' || to_char(d, 'YYYY_MM'), d, (d + interval '6 months')::date);
		d := (d + interval '6 months')::date;
	END LOOP;
END
$$;

INSERT INTO archive.calls
SELECT r, bench.at(r, :rows), 'queue' || (r % 40), 'agent' || (r % 300),
	   bench.phone_form(bench.person(r, 1), r), '+4722' || lpad((r % 1000000)::text, 6, '0'),
	   (r % 600)::int, '/rec/' || r || '.ogg'
FROM generate_series(1, :rows) r;

INSERT INTO archive.chats
SELECT r, bench.at(r, :rows / 10), 'chat' || (r % 10),
	   CASE WHEN r % 2 = 0 THEN bench.phone_form(bench.person(r, 2), r)
			ELSE bench.email_form(bench.person(r, 2), r) END,
	   'transcript of chat ' || r
FROM generate_series(1, :rows / 10) r;

INSERT INTO archive.emails
SELECT r, bench.at(r, :rows / 10), 'mail' || (r % 10),
	   bench.email_form(bench.person(r, 3), r), 'Re: case ' || r
FROM generate_series(1, :rows / 10) r;

INSERT INTO sms.answers
SELECT r, bench.at(r, :rows / 5), bench.phone_form(bench.person(r, 4), r),
	   (r % 10)::int, CASE WHEN r % 3 = 0 THEN 'Very good' ELSE (r % 10)::text END
FROM generate_series(1, :rows / 5) r;

INSERT INTO raw.events
SELECT r, bench.at(r, :rows / 2), (ARRAY['offered', 'answered', 'abandoned', 'transferred'])[r % 4 + 1],
	   bench.phone_form(bench.person(r, 5), r), 'queue' || (r % 40)
FROM generate_series(1, :rows / 2) r;

-- what the portal searches by
CREATE INDEX calls_caller_idx ON archive.calls (caller);
CREATE INDEX calls_queue_idx ON archive.calls (queue, started_at);
CREATE INDEX chats_chatter_idx ON archive.chats (chatter_id);
CREATE INDEX emails_from_idx ON archive.emails (from_addr);

SELECT anonymize.add_target('archive.calls', 'caller', 'phone', 'archive', 'started_at');
SELECT anonymize.add_target('archive.chats', 'chatter_id', 'phone_or_email', 'archive', 'started_at');
SELECT anonymize.add_target('archive.emails', 'from_addr', 'email', 'archive', 'received_at');
SELECT anonymize.add_target('sms.answers', 'phone', 'phone', 'sms_survey', 'answered_at');
SELECT anonymize.add_target('raw.events', 'number', 'phone', 'raw_data', 'ts');

-- k fresh requests, one person each (phone and email, every scope): each
-- matches a few rows in every target.  Returns the first person used.
CREATE FUNCTION bench.file_requests(k bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
	first bigint;
BEGIN
	UPDATE bench.param SET next_person = next_person + k RETURNING next_person - k INTO first;
	IF first + k - 1 > (SELECT persons FROM bench.param) THEN
		RAISE EXCEPTION 'bench: out of fresh persons (% needed)', first + k - 1;
	END IF;
	INSERT INTO anonymize.anonymize_request (phone, email, to_date, comment, archive, sms_survey, raw_data)
	SELECT CASE WHEN bench.cc(p) = '47' THEN bench.national(p) ELSE '00' || bench.cc(p) || bench.national(p) END,
		   bench.email(p), current_date, 'bench', true, true, true
	FROM generate_series(first, first + k - 1) p;
	RETURN first;
END
$$;

-- persons reserved without filing a request (for the hand-written peer)
CREATE FUNCTION bench.take_persons(k bigint) RETURNS bigint
LANGUAGE sql AS $$
	UPDATE bench.param SET next_person = next_person + k RETURNING next_person - k
$$;
