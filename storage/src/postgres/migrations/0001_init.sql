-- hop storage schema 1: the key-value items, the revision counter, and the change table that
-- watchers resume from. Keys are bytea (byte order = Rust's str order; keys may hold NUL).

-- One row: the revision of the latest write (updated inside every write transaction, which
-- serializes writers in commit order) and how far the change table has been trimmed.
CREATE TABLE hop_meta (
    id integer PRIMARY KEY CHECK (id = 1),
    revision bigint NOT NULL,
    trimmed_through bigint NOT NULL
);
INSERT INTO hop_meta (id, revision, trimmed_through) VALUES (1, 0, 0);

CREATE TABLE hop_items (
    key bytea PRIMARY KEY,
    value bytea NOT NULL,
    revision bigint NOT NULL,
    -- the lease's end, in ns since the Unix epoch; NULL: no lease
    expires_ns bigint
);
CREATE INDEX hop_items_expiry ON hop_items (expires_ns, key) WHERE expires_ns IS NOT NULL;

-- Every committed write, by revision: a put (value not NULL) or a delete (value NULL).
CREATE TABLE hop_changes (
    revision bigint PRIMARY KEY,
    key bytea NOT NULL,
    value bytea,
    expires_ns bigint,
    -- when it was written (the writer's clock), for trimming by age
    at_ns bigint NOT NULL
);
CREATE INDEX hop_changes_at ON hop_changes (at_ns);
