-- Bearer tokens for the JSON API: only a SHA-256 of each token is kept (tokens are 256 random
-- bits, so a slow hash would add nothing), shown once when created.
CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY,
    name         TEXT    NOT NULL UNIQUE,
    token_hash   BLOB    NOT NULL UNIQUE,
    read_only    INTEGER NOT NULL CHECK (read_only IN (0, 1)),
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER
);
