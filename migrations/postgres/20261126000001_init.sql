-- Identity ids come from a sequence and are never reused, so a keyset page link (?before=ID)
-- never points into rows that appeared later.
CREATE TABLE subscribers (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email      TEXT   NOT NULL,
    -- lower-cased local part + ASCII domain: one row per address whatever the letter case
    email_key  TEXT   NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE sessions (
    key        BYTEA  PRIMARY KEY,  -- SHA-256 of the cookie's id, never the id itself
    data       TEXT   NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE INDEX sessions_by_expiry ON sessions (expires_at);

CREATE TABLE admin_credential (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    password_hash TEXT    NOT NULL,
    updated_at    BIGINT  NOT NULL
);
