-- Bearer tokens for the JSON API: only a SHA-256 of each token is kept (tokens are 256 random
-- bits, so a slow hash would add nothing), shown once when created.
CREATE TABLE api_tokens (
    id           BIGSERIAL PRIMARY KEY,
    name         TEXT      NOT NULL UNIQUE,
    token_hash   BYTEA     NOT NULL UNIQUE,
    read_only    BOOLEAN   NOT NULL,
    created_at   BIGINT    NOT NULL,
    last_used_at BIGINT
);
