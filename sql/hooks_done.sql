-- Search hooks after a run: Done requests keep only keyed digests, and
-- is_anonymized() still knows their identifiers in every format; the
-- guard shows the rewritten rows, and rows after to_date as before.
-- Continues from hooks.sql (its requests and its hooks.* tables).
SET anonymize.timezone = 'Europe/Oslo';

SELECT anonymize.run() > 0 AS finished_some;
SELECT comment, status, phone, email, archive
FROM anonymize.anonymize_request WHERE comment LIKE 'hooks:%' ORDER BY id;
-- nothing on the page or in its digests is the plaintext
SELECT count(*) AS plaintext_left FROM anonymize.anonymize_request
WHERE status = 'Done' AND (phone LIKE '%12345%' OR email ILIKE '%ann%');
SELECT length(p.phone_digest) AS phone_digest, length(p.email_digest) AS email_digest
FROM anonymize.request_private p JOIN anonymize.anonymize_request r ON r.id = p.request_id
WHERE r.comment = 'hooks: ann';

-- Done: true in every format, from the digests alone
SELECT v AS identifier, anonymize.is_anonymized(v)
FROM unnest(ARRAY[
	'91234567', '+4791234567', '004791234567', '+47 912 34 567', 'tel:+4791234567',
	'ann.test@example.no', 'ANN.TEST@EXAMPLE.NO', '"Ann" <Ann.Test@Example.no>',
	'91234568', '+4691234567', 'xann.test@example.no', '******67', 'Anonymized', '']) v;
-- a Done request without the archive scope is not an archive hook
SELECT anonymize.is_anonymized('92000004') AS sms_only_done;

-- the portal after the run: rows up to to_date show Anonymized, rows
-- after it are found by the number as before
SET SESSION AUTHORIZATION regress_anonymize_portal;
SELECT anonymize.is_anonymized('+4791234567') AS ask_first;
SELECT id, caller, queue FROM hooks.calls WHERE caller = '+4791234567' ORDER BY id;
SELECT id, caller FROM hooks.calls WHERE queue = 'sales' ORDER BY id;
SELECT id, caller FROM hooks.calls WHERE queue = 'support' ORDER BY id;
SELECT id, chatter_id, started_at FROM hooks.chats ORDER BY id;
SELECT id, chatter_id FROM hooks.chats WHERE chatter_id = 'ann.test@example.no' ORDER BY id;
SELECT id, sender FROM hooks.sms ORDER BY id;
RESET SESSION AUTHORIZATION;
-- what the owner sees is what the portal sees, now that the run is done
SET ROLE regress_anonymize_owner;
SELECT id, caller FROM hooks.calls ORDER BY id;
RESET ROLE;

-- clean up for the tests that follow: guards and targets.  The tables
-- stay: the run may still be vacuuming them after run() has returned.
SELECT anonymize.unprotect(t) FROM unnest(ARRAY['hooks.calls', 'hooks.chats', 'hooks.sms']::regclass[]) t;
SELECT anonymize.remove_target(tbl, col) FROM anonymize.targets
WHERE tbl::text LIKE 'hooks.%';
SELECT count(*) AS guard_grants_left
FROM pg_proc p, LATERAL aclexplode(p.proacl) a
WHERE p.proname = '_guard_visible' AND a.grantee <> p.proowner;
