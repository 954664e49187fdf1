-- The cut-off in anonymize.timezone: a row at 23:30 local time on to_date
-- is rewritten, one at 00:10 local time the next day is not, also where
-- the UTC date differs; timestamp without time zone is local time; date
-- compares as a date.  The run reads the server's configuration, so the
-- setting is changed with ALTER SYSTEM (server TimeZone: Europe/Oslo).
ALTER SYSTEM SET anonymize.timezone = 'America/New_York';
SELECT pg_reload_conf();
SELECT pg_sleep(0.3);
SHOW anonymize.timezone;

CREATE SCHEMA tz;
CREATE TABLE tz.tstz (id int PRIMARY KEY, caller text, at timestamptz);
CREATE TABLE tz.ts (id int PRIMARY KEY, caller text, at timestamp);
CREATE TABLE tz.d (id int PRIMARY KEY, caller text, on_day date);
INSERT INTO tz.tstz VALUES
 (1, '41234567', '2024-06-30 23:30-04'),   -- 23:30 New York on to_date; UTC: July 1st
 (2, '41234567', '2024-07-01 00:10-04'),   -- 00:10 New York the next day
 (3, '41234567', '2024-06-30 23:30+02'),   -- Oslo 23:30 = New York 17:30 on to_date
 (4, '41234567', '2024-07-01 05:00+02'),   -- Oslo July 1st = New York 23:00 on to_date
 (5, '41234567', '2024-07-01 06:10+02'),   -- Oslo July 1st = New York 00:10 the next day
 (6, '41234567', NULL);                    -- unknown time: never
INSERT INTO tz.ts VALUES
 (1, '41234567', '2024-06-30 23:30'),
 (2, '41234567', '2024-07-01 00:10'),
 (3, '41234567', '2024-06-30 00:00');
INSERT INTO tz.d VALUES
 (1, '41234567', '2024-06-30'),
 (2, '41234567', '2024-07-01'),
 (3, '41234567', '2023-01-01');
SELECT anonymize.add_target('tz.tstz', 'caller', 'phone', 'archive', 'at');
SELECT anonymize.add_target('tz.ts', 'caller', 'phone', 'archive', 'at');
SELECT anonymize.add_target('tz.d', 'caller', 'phone', 'archive', 'on_day');

INSERT INTO anonymize.anonymize_request (phone, to_date, comment)
VALUES ('41234567', '2024-06-30', 'tz');
-- preview() counts with the same cut-off
SELECT p.target, p.rows
FROM anonymize.anonymize_request r, LATERAL anonymize.preview(r.id) p
WHERE r.comment = 'tz' AND p.target::text LIKE 'tz.%' ORDER BY 1;

SELECT anonymize.run() AS finished;
SELECT regress.wait_run();
SELECT id, caller, at AT TIME ZONE 'America/New_York' AS new_york_time FROM tz.tstz ORDER BY id;
SELECT * FROM tz.ts ORDER BY id;
SELECT * FROM tz.d ORDER BY id;
SELECT status, rows_anonymized FROM anonymize.anonymize_request WHERE comment = 'tz';

ALTER SYSTEM RESET anonymize.timezone;
SELECT pg_reload_conf();
SELECT pg_sleep(0.3);
SELECT anonymize.remove_target('tz.tstz', 'caller'), anonymize.remove_target('tz.ts', 'caller'),
       anonymize.remove_target('tz.d', 'caller');
