-- bench/naive.sql: the peer, what a DBA would write by hand for one
-- request: normalize the request's number with anonymize.normalize_phone(),
-- normalize the archive's values in SQL (normalize_phone()
-- itself would raise on "Unknown" or on an email in a chat), and run one
-- UPDATE per target.  Each request is a sequential scan of every target.

\set ON_ERROR_STOP 1

-- a stored value's canonical form, in plain SQL, written for speed
-- (translate and LIKE rather than regexps): "tel:" and separators
-- dropped, 00 turned into +, a national number given +47.  A value that
-- is not a number gets a form no request has ('+47Unknown').
CREATE FUNCTION bench.sql_canon_phone(v text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
	WHEN translate(replace(v, 'tel:', ''), ' .()-', '') LIKE '00%'
		THEN '+' || substr(translate(replace(v, 'tel:', ''), ' .()-', ''), 3)
	WHEN translate(replace(v, 'tel:', ''), ' .()-', '') LIKE '+%'
		THEN translate(replace(v, 'tel:', ''), ' .()-', '')
	ELSE '+47' || translate(replace(v, 'tel:', ''), ' .()-', '')
END;

-- a stored email's address, lower case, without display name or blanks
CREATE FUNCTION bench.sql_canon_email(v text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN lower(btrim(CASE WHEN strpos(v, '<') > 0 THEN split_part(split_part(v, '<', 2), '>', 1) ELSE v END));

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
