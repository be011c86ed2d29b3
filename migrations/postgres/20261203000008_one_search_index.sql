-- One trigram index over both forms of the address instead of one each. For most addresses the
-- two forms are the same text, and a trigram index keeps each distinct trigram of a row once, so
-- this index holds about half the entries of the two, and an insert (an import above all)
-- maintains one. The newline cannot occur in an address or a search term, so no match spans
-- the two forms.
DROP INDEX subscribers_email_trgm;
DROP INDEX subscribers_key_trgm;
CREATE INDEX subscribers_search_trgm ON subscribers
    USING gin ((email_key || E'\n' || lower(email)) gin_trgm_ops);
