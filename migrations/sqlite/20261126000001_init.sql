-- AUTOINCREMENT: ids are never reused, so a keyset page link (?before=ID) never points into
-- rows that appeared later.
CREATE TABLE subscribers (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    email      TEXT    NOT NULL,
    -- lower-cased local part + ASCII domain: one row per address whatever the letter case
    email_key  TEXT    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

CREATE TABLE sessions (
    key        BLOB    PRIMARY KEY,  -- SHA-256 of the cookie's id, never the id itself
    data       TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX sessions_by_expiry ON sessions (expires_at);

CREATE TABLE admin_credential (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    password_hash TEXT    NOT NULL,
    updated_at    INTEGER NOT NULL
);
