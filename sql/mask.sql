-- mask_phone(), mask_email() and partial()
SELECT v, anonymize.mask_phone(v) AS visible_2, anonymize.mask_phone(v, 0) AS visible_0,
       anonymize.mask_phone(v, 4) AS visible_4
FROM (VALUES ('004798765432'), ('98765432'), ('+47 987 65 432'), ('1'), (''),
             ('12'), ('tel:+4798765432')) AS t(v);
SELECT anonymize.mask_phone('98765432', 100);
SELECT anonymize.mask_phone('98765432', -1);
SELECT anonymize.mask_phone(NULL) IS NULL AS null_in_null_out;

SELECT v, anonymize.mask_email(v)
FROM (VALUES ('bob.test@mytest.no'), ('a@b.no'), ('ab@cd.no'),
             ('bob@localhost'), ('not an address'), ('x'), (''),
             ('åse.ødegård@blåbær.no'), ('bob@mail.example.co.uk')) AS t(v);
SELECT anonymize.mask_email(NULL) IS NULL AS null_in_null_out;

-- partial(): as PostgreSQL Anonymizer's, never showing a character twice
SELECT anonymize.partial('abcdefgh', 1, 'xxxx', 3);
SELECT anonymize.partial('abcdefgh', 2, '***', 0);
SELECT anonymize.partial('abcdefgh', 0, '***', 2);
SELECT anonymize.partial('abc', 2, '*', 2);
SELECT anonymize.partial('abc', 5, '*', 5);
SELECT anonymize.partial('', 1, '***', 1);
SELECT anonymize.partial('blåbær', 2, '**', 1);
SELECT anonymize.partial('abc', -1, '*', 1);
SELECT anonymize.partial(NULL, 1, '*', 1) IS NULL AS null_in_null_out;
