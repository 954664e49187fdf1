-- tools/demo.sql: the story the demo tells, run by tools/demo.sh in a
-- database "archive" of a throwaway cluster.
\pset footer off
\pset null '-'
\set QUIET on
CREATE EXTENSION anonymize;
\set QUIET off

\echo
\echo '## 1. The administrator files two requests on the Archive - Anonymize page'
\echo
INSERT INTO anonymize.anonymize_request (phone, to_date, comment, archive, sms_survey, raw_data)
VALUES ('555551', '2023-12-15', 'Paal''s test phone', true, false, false);
INSERT INTO anonymize.anonymize_request (phone, email, to_date, comment, archive, sms_survey, raw_data)
VALUES ('004798765', 'bob.test@mytest.no', '2024-02-21', 'New test', true, false, true);

SELECT phone AS "Phone number", email AS "Email",
       to_char(to_date, 'DD-MM-YYYY') AS "To Date (including)", comment AS "Comment",
       CASE WHEN archive THEN 'yes' ELSE 'no' END AS "Archive",
       CASE WHEN sms_survey THEN 'yes' ELSE 'no' END AS "SMS Survey",
       CASE WHEN raw_data THEN 'yes' ELSE 'no' END AS "Raw Data",
       status AS "Status", user_name AS "User name"
FROM anonymize.anonymize_request ORDER BY id;

\echo
\echo '## 2. What the extension matches on: the canonical form (anonymize.country_code = 47)'
\echo
SELECT v AS "stored in the archive as", anonymize.normalize_phone(v) AS "canonical"
FROM (VALUES ('555551'), ('004798765'), ('+47 98 765'), ('(0047) 98-765'),
             ('004612345678'), ('+46 12 345 678')) AS t(v);
SELECT v AS "email as stored", anonymize.normalize_email(v) AS "canonical"
FROM (VALUES ('bob.test@mytest.no'), ('Bob.Test@MyTest.NO'),
             ('"Bob Test" <bob.test@mytest.no>')) AS t(v);

\echo
\echo '## 3. Bad input is refused with a clear error, and nothing is stored'
\echo
\set ON_ERROR_STOP off
INSERT INTO anonymize.anonymize_request (phone, comment) VALUES ('98-76 5abc', 'typo');
INSERT INTO anonymize.anonymize_request (email, to_date) VALUES ('bob@mytest.no', current_date + 30);
\set ON_ERROR_STOP on

\echo
\echo '## 4. When a request is Done, the page keeps only masked identifiers'
\echo
SELECT phone AS "entered", anonymize.mask_phone(phone) AS "shown once Done"
FROM anonymize.anonymize_request WHERE phone IS NOT NULL ORDER BY id;
SELECT email AS "entered", anonymize.mask_email(email) AS "shown once Done"
FROM anonymize.anonymize_request WHERE email IS NOT NULL ORDER BY id;
