-- bench/naive.sql: the peer, what a DBA would write by hand for one
-- request: normalize the request's number with anonymize.normalize_phone(),
-- normalize the archive's values with a regexp in SQL (normalize_phone()
-- itself would raise on "Unknown" or on an email in a chat), and run one
-- UPDATE per target.  Each request is a sequential scan of every target.

\set ON_ERROR_STOP 1

-- a stored value's canonical form, in plain SQL (NULL when not a number)
CREATE FUNCTION bench.sql_canon_phone(v text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
	WHEN regexp_replace(regexp_replace(v, '^tel:', ''), '[ .()-]', '', 'g') ~ '^00[1-9][0-9]+$'
		THEN '+' || substr(regexp_replace(regexp_replace(v, '^tel:', ''), '[ .()-]', '', 'g'), 3)
	WHEN regexp_replace(regexp_replace(v, '^tel:', ''), '[ .()-]', '', 'g') ~ '^\+[1-9][0-9]+$'
		THEN regexp_replace(regexp_replace(v, '^tel:', ''), '[ .()-]', '', 'g')
	WHEN regexp_replace(regexp_replace(v, '^tel:', ''), '[ .()-]', '', 'g') ~ '^[1-9][0-9]+$'
		THEN '+47' || regexp_replace(regexp_replace(v, '^tel:', ''), '[ .()-]', '', 'g')
END;

CREATE FUNCTION bench.sql_canon_email(v text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN lower(btrim(coalesce(substring(v from '<([^>]*)>'), v)));

-- erase person p by hand, as a request for p (phone, email, today) would;
-- returns the rows rewritten
CREATE FUNCTION bench.naive_erase(p bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
	entered	text := CASE WHEN bench.cc(p) = '47' THEN bench.national(p)
					 ELSE '00' || bench.cc(p) || bench.national(p) END;
	v_phone	text := anonymize.normalize_phone(entered);
	v_email	text := anonymize.normalize_email(bench.email(p));
	upto	timestamptz := (current_date + 1)::timestamptz;
	n		bigint;
	total	bigint := 0;
BEGIN
	UPDATE archive.calls SET caller = 'Anonymized'
	 WHERE started_at < upto AND bench.sql_canon_phone(caller) = v_phone;
	GET DIAGNOSTICS n = ROW_COUNT;
	total := total + n;
	UPDATE archive.chats SET chatter_id = 'Anonymized'
	 WHERE started_at < upto
	   AND (bench.sql_canon_phone(chatter_id) = v_phone OR bench.sql_canon_email(chatter_id) = v_email);
	GET DIAGNOSTICS n = ROW_COUNT;
	total := total + n;
	UPDATE archive.emails SET from_addr = 'Anonymized'
	 WHERE received_at < upto AND bench.sql_canon_email(from_addr) = v_email;
	GET DIAGNOSTICS n = ROW_COUNT;
	total := total + n;
	UPDATE sms.answers SET phone = 'Anonymized'
	 WHERE answered_at < upto AND bench.sql_canon_phone(phone) = v_phone;
	GET DIAGNOSTICS n = ROW_COUNT;
	total := total + n;
	UPDATE raw.events SET number = 'Anonymized'
	 WHERE ts < upto AND bench.sql_canon_phone(number) = v_phone;
	GET DIAGNOSTICS n = ROW_COUNT;
	total := total + n;
	RETURN total;
END
$$;
