-- Two-person approvals (datasharing.v1.Approvals). One schema for SQLite and PostgreSQL: only
-- TEXT, BIGINT and BOOLEAN columns, times as Unix milliseconds.

CREATE TABLE approvals (
    id TEXT PRIMARY KEY,
    requester TEXT NOT NULL,
    method TEXT NOT NULL,
    -- Hex SHA-256 of the request's semantic fields (SemanticRequest::digest).
    digest TEXT NOT NULL,
    data_share_arn TEXT NOT NULL,
    target_kind TEXT NOT NULL,
    target_value TEXT NOT NULL,
    consumer_account TEXT NOT NULL,
    allow_writes BOOLEAN NOT NULL,
    required_approvals BIGINT NOT NULL,
    -- PENDING, APPROVED, DENIED, CONSUMED, EXPIRED.
    state TEXT NOT NULL,
    -- True while the approval answers for its request: pending, approved, or denied and not yet
    -- expired. At most one live approval per (requester, method, digest).
    live BOOLEAN NOT NULL,
    -- Bumped by every review, so that a review's transaction holds the row.
    version BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    created_by_request_id TEXT NOT NULL,
    consumed_at_ms BIGINT,
    consumed_by_request_id TEXT
);

CREATE UNIQUE INDEX approvals_one_live_per_request
    ON approvals (requester, method, digest) WHERE live;

CREATE INDEX approvals_by_expiry ON approvals (state, expires_at_ms);

CREATE INDEX approvals_newest_first ON approvals (created_at_ms, id);

CREATE TABLE approval_reviews (
    approval_id TEXT NOT NULL REFERENCES approvals (id),
    principal TEXT NOT NULL,
    -- APPROVE or DENY.
    verdict TEXT NOT NULL,
    comment TEXT NOT NULL,
    reviewed_at_ms BIGINT NOT NULL,
    -- One principal counts once.
    PRIMARY KEY (approval_id, principal)
);
