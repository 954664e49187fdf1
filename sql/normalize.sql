-- normalize_phone() and normalize_email(): canonical forms and every rule
-- of DESIGN.md "Identifiers".  The cluster runs with
-- anonymize.country_code = '47'.
SHOW anonymize.country_code;

-- accepted phone formats
SELECT v AS entered, anonymize.normalize_phone(v) AS canonical
FROM (VALUES ('98765432'), ('004612345678'), ('+46 12 345 678'),
             ('+4798765432'), ('004798765432'), ('987 65 432'),
             ('987.65.432'), ('987-65-432'), ('(987) 65-432'),
             ('+47 (987) 65.432'), ('123'), ('+1234'), ('001234'),
             ('+123456789012345'), ('004712345678901'), ('0012345678901234'),
             (' 98765432 ')) AS t(v);

-- "(0)" after a country code is the trunk prefix, not dialled from abroad
SELECT v AS entered, anonymize.normalize_phone(v) AS canonical
FROM (VALUES ('+44 (0)20 7946 0958'), ('0044 (0)20 7946 0958'),
             ('+49 (0)30 1234567'), ('+47 (0) 987 65 432'),
             ('(0)98765432'), ('0(0)4798765432')) AS t(v);
-- "00" then "(0)" is no country code
SELECT * FROM regress.try($$SELECT anonymize.normalize_phone('00 (0)4798765432')$$);

-- trunk prefix: a national 08-123 45 67 in Sweden
SET anonymize.country_code = '46';
SET anonymize.trunk_prefix = '0';
SELECT v AS entered, anonymize.normalize_phone(v) AS canonical
FROM (VALUES ('08-123 45 67'), ('0046 8 123 45 67'), ('+46 8 123 45 67'),
             ('8 123 45 67'), ('(0)8 123 45 67'), ('+46 (0)8 123 45 67')) AS t(v);
-- the trunk prefix is not a digit of the number: 0 + 2 digits is too short
SELECT * FROM regress.try($$SELECT anonymize.normalize_phone('012')$$);
RESET anonymize.trunk_prefix;
RESET anonymize.country_code;

-- invalid settings are refused
SET anonymize.country_code = '4a';
SET anonymize.country_code = '0047';
SET anonymize.trunk_prefix = 'x';

-- rejected phone numbers: SQLSTATE 22023, a detail naming the rule, the
-- format rules as hint, and never the value itself
SELECT v AS entered, r.code, r.message, r.detail
FROM (VALUES ('98765abc'), ('+'), ('00'), (''), ('   '), ('12'), ('+123'),
             ('00123'), ('+1234567890123456'), ('004712345678901234'),
             ('+0471234'), ('000471234'), ('98+765432'), ('++4798765432'),
             ('tel:+4798765432'), ('98765432 ext 1'), (E'9876\n5432'),
             ('٣٣٣٣٣٣')) AS t(v),
     LATERAL regress.try(format('SELECT anonymize.normalize_phone(%L)', v)) r;
SELECT DISTINCT r.hint
FROM (VALUES ('98765abc'), ('+'), ('12')) AS t(v),
     LATERAL regress.try(format('SELECT anonymize.normalize_phone(%L)', v)) r;

-- national with no country code configured: the hint says what to set
SET anonymize.country_code = '';
SELECT * FROM regress.try($$SELECT anonymize.normalize_phone('98765432')$$);
-- international numbers need no country code
SELECT anonymize.normalize_phone('004612345678');
RESET anonymize.country_code;
SELECT anonymize.normalize_phone(NULL) IS NULL AS null_in_null_out;

-- emails
SELECT v AS entered, anonymize.normalize_email(v) AS canonical
FROM (VALUES ('bob.test@mytest.no'), ('Bob.Test@MyTest.no'),
             ('"Bob" <bob.test@mytest.no>'), (' bob.test@mytest.no '),
             ('Bob Test <Bob.Test@MyTest.NO>'), ('o''brien+tag@sub.example.co.uk'),
             ('åse@blåbær.no')) AS t(v);

SELECT v AS entered, r.code, r.message, r.detail
FROM (VALUES ('bob.test'), (''), ('bob@@mytest.no'), ('bob@mytest'),
             ('@mytest.no'), ('bob@'), ('bob test@mytest.no'),
             ('bob..test@mytest.no'), ('.bob@mytest.no'), ('bob@-mytest.no'),
             ('bob@mytest..no'), ('"Bob" <bob@mytest.no'), ('a@b.no, c@d.no'),
             ('mailto:bob@mytest.no'), (E'bob\t@mytest.no')) AS t(v),
     LATERAL regress.try(format('SELECT anonymize.normalize_email(%L)', v)) r;
SELECT * FROM regress.try(format('SELECT anonymize.normalize_email(%L)',
                                 repeat('a', 250) || '@mytest.no'));
SELECT anonymize.normalize_email(NULL) IS NULL AS null_in_null_out;
