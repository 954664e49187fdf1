-- doc/example-archive.sql: the example archive of the quick start
CREATE SCHEMA archive;
CREATE SCHEMA sms;
CREATE SCHEMA raw;
CREATE TABLE archive.calls (id bigserial PRIMARY KEY, caller text, queue text,
                            started_at timestamptz NOT NULL, recording text);
CREATE INDEX ON archive.calls (caller);
CREATE TABLE archive.chats (id bigserial PRIMARY KEY, chatter_id text, queue text,
                            started_at timestamp NOT NULL, log text);
CREATE TABLE archive.emails (id bigserial PRIMARY KEY, from_address text, subject text,
                             received_on date NOT NULL);
CREATE TABLE sms.answers (id bigserial PRIMARY KEY, number text, score int,
                          answered_at timestamptz NOT NULL);
CREATE TABLE raw.events (id bigserial, number text, event text, at timestamptz NOT NULL)
    PARTITION BY RANGE (at);
CREATE TABLE raw.events_2023 PARTITION OF raw.events FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
CREATE TABLE raw.events_2024 PARTITION OF raw.events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE raw.events_rest PARTITION OF raw.events DEFAULT;
