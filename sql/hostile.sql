-- hostile: the SQL functions under hostile input.  Control characters,
-- digits that are not ASCII, 100 kB values, unbalanced brackets and
-- quotes, and random characters from all of Unicode go into every
-- normalizer and mask.  Each call must return or fail with a 22xxx
-- SQLSTATE (data exception), never say the value back in an error, and
-- never take the server down: the postmaster's start time is the same at
-- the end.
SELECT pg_postmaster_start_time() AS hostile_start \gset

CREATE TEMP TABLE hostile (label text, v text);
-- control characters inside a number and inside an address
INSERT INTO hostile
SELECT 'control ' || i, '98765' || chr(i) || '432' FROM generate_series(1, 31) i
UNION ALL
SELECT 'email control ' || i, 'bob' || chr(i) || '@example.no' FROM generate_series(1, 31) i
UNION ALL
SELECT 'del', '98765' || chr(127) || '432'
UNION ALL
SELECT 'email del', 'bob' || chr(127) || '@example.no';
-- digits that are not ASCII: Arabic-Indic, Persian, Devanagari, full width,
-- mathematical, superscript; mixed with ASCII digits
INSERT INTO hostile VALUES
	('arabic-indic', '٣٣٣٣٣٣٣٣'), ('arabic mixed', '98٣65432'),
	('persian', '۹۸۷۶۵۴۳۲'), ('devanagari', '९८७६५४३२'),
	('full width', '９８７６５４３２'), ('full width plus', '＋４７９８７６５４３２'),
	('math digits', '𝟗𝟖𝟕𝟔𝟓𝟒𝟑𝟐'), ('superscript', '⁹⁸⁷⁶⁵⁴³²'),
	('arabic email', 'bob٣@example.no'), ('full width at', 'bob＠example.no');
-- unbalanced brackets and quotes
INSERT INTO hostile VALUES
	('open paren', '(((98765432'), ('close paren', '98765432)))'),
	('parens only', '()()()'), ('plus in parens', '(+47) 98765432'),
	('open angle', '"Bob" <bob@example.no'), ('close angle', 'bob@example.no>'),
	('double angle', '<<bob@example.no>>'), ('empty angle', '<>'),
	('lone open', '<'), ('lone close', '>'), ('quotes', '"""'),
	('single quote', ''''), ('quoted local', '"bob"@example.no'),
	('open quote', '"Bob <bob@example.no>'), ('square', '[bob@example.no]'),
	('backslash', 'bob\@example.no'), ('sql quote', ''' OR 1=1 --'),
	('semicolon', '98765432; DROP TABLE anonymize.anonymize_request'),
	('percent', '%s%n%x@example.no'), ('at only', '@@@'), ('dots', '...'),
	('plus plus', '++4798765432'), ('plus late', '98765+432'),
	('zeros', '0000000'), ('double zero', '00'), ('tel only', 'tel:'),
	('mailto only', 'mailto:'), ('empty', ''), ('blank', '   ');
-- 100 kB values
INSERT INTO hostile VALUES
	('100k digits', repeat('9', 100000)), ('100k zeros', repeat('0', 100000)),
	('100k 00 digits', '00' || repeat('1', 99998)),
	('100k parens', repeat('(', 100000)), ('100k plus', repeat('+', 100000)),
	('100k spaces', repeat(' ', 100000)), ('100k separators', repeat('-. ', 33334)),
	('100k local', repeat('a', 100000) || '@example.no'),
	('100k domain', 'bob@' || repeat('a.', 50000) || 'no'),
	('100k at', repeat('@', 100000)), ('100k angle', repeat('<', 100000)),
	('100k angle close', repeat('<', 50000) || repeat('>', 50000)),
	('100k ø', repeat('ø', 50000)), ('100k emoji', repeat('🙂', 25000)),
	('100k mixed', repeat('ø@.9 ', 20000));
-- random characters from all of Unicode (no NUL, no surrogates), fixed seed
SELECT setseed(0.4242);
INSERT INTO hostile
SELECT 'random ' || n,
	   (SELECT string_agg(chr(CASE WHEN c BETWEEN 55296 AND 57343 THEN c - 4096
									ELSE c END), '')
		FROM (SELECT 1 + floor(random() * CASE WHEN k % 3 = 0 THEN 127
											   WHEN k % 3 = 1 THEN 2047
											   ELSE 1114110 END)::int AS c
			  FROM generate_series(1, 1 + (n * 7) % 40) k
			  WHERE n > 0) AS chars)
FROM generate_series(1, 200) n;
SELECT count(*) AS hostile_values, sum(octet_length(v)) > 1500000 AS over_1_5_mb
FROM hostile;

CREATE TEMP TABLE calls (fn text);
INSERT INTO calls VALUES
	('anonymize.normalize_phone(%L)'),
	('anonymize.normalize_email(%L)'),
	('anonymize.mask_phone(%L)'),
	('anonymize.mask_phone(%L, 2147483647)'),
	('anonymize.mask_phone(%L, -2147483648)'),
	('anonymize.mask_email(%L)'),
	('anonymize.partial(%L, 3, ''***'', 2)'),
	('anonymize.partial(%1$L, 2147483647, %1$L, 2147483647)'),
	('anonymize.partial(%L, 0, '''', 0)'),
	('anonymize.partial(%L, -1, ''*'', 1)');

CREATE TEMP TABLE outcome AS
SELECT h.label, h.v, c.fn, t.*
FROM hostile h CROSS JOIN calls c
	CROSS JOIN LATERAL regress.try(format('SELECT ' || c.fn, h.v)) t;

-- every call returned or failed with a data exception (class 22)
SELECT fn, code, count(*) FROM outcome GROUP BY fn, code ORDER BY fn, code;
SELECT label, fn, code, message FROM outcome
WHERE code <> 'ok' AND code NOT LIKE '22%';
-- no error says the value back
SELECT label, fn FROM outcome
WHERE length(v) >= 4 AND btrim(v) <> ''
  AND strpos(concat_ws(' ', message, detail, hint), v) > 0;

-- a few outputs in full: nothing but ASCII digits counts as a digit
SELECT label, code, detail FROM outcome
WHERE fn = 'anonymize.normalize_phone(%L)'
  AND label IN ('arabic-indic', 'arabic mixed', 'full width', 'math digits',
				'control 9', 'control 10', 'del', '100k digits', '100k 00 digits',
				'100k parens', 'open paren', 'plus in parens', 'zeros')
ORDER BY label;
SELECT label, code, detail FROM outcome
WHERE fn = 'anonymize.normalize_email(%L)'
  AND label IN ('email control 9', 'email control 1', 'email del', 'arabic email', 'full width at',
				'open angle', 'close angle', 'double angle', 'open quote',
				'quoted local', '100k local', '100k angle close')
ORDER BY label;
-- masks of 100 kB values keep their length in characters
SELECT label,
	   length(anonymize.mask_phone(v)) = length(v) AS phone_same_length,
	   length(anonymize.mask_email(v)) = length(v) AS email_same_length,
	   length(anonymize.partial(v, 3, '***', 2)) AS partial_length,
	   anonymize.partial(v, 2147483647, '', 2147483647) = v AS partial_all
FROM hostile WHERE label LIKE '100k%' ORDER BY label;

-- the server never restarted
SELECT pg_postmaster_start_time() = :'hostile_start' AS same_postmaster;
