-- The semantic fields of any operation's request (SemanticRequest::fields), one row per field
-- in the operation's order, replacing the association's own columns: an approval can gate an
-- operation of any shape. The digest is unchanged (it never hashed the names), so approvals
-- stored before this migration stay valid. Portable SQL for SQLite (3.35+) and PostgreSQL.

CREATE TABLE approval_fields (
    approval_id TEXT NOT NULL REFERENCES approvals (id),
    ordinal BIGINT NOT NULL,
    name TEXT NOT NULL,
    -- Exactly one of the two is set.
    text_value TEXT,
    flag_value BOOLEAN,
    PRIMARY KEY (approval_id, ordinal)
);

INSERT INTO approval_fields (approval_id, ordinal, name, text_value, flag_value)
    SELECT id, 0, 'data_share_arn', data_share_arn, NULL FROM approvals;
INSERT INTO approval_fields (approval_id, ordinal, name, text_value, flag_value)
    SELECT id, 1, 'consumer_kind', target_kind, NULL FROM approvals;
INSERT INTO approval_fields (approval_id, ordinal, name, text_value, flag_value)
    SELECT id, 2, 'consumer', target_value, NULL FROM approvals;
INSERT INTO approval_fields (approval_id, ordinal, name, text_value, flag_value)
    SELECT id, 3, 'consumer_account', consumer_account, NULL FROM approvals;
INSERT INTO approval_fields (approval_id, ordinal, name, text_value, flag_value)
    SELECT id, 4, 'allow_writes', NULL, allow_writes FROM approvals;

ALTER TABLE approvals DROP COLUMN data_share_arn;
ALTER TABLE approvals DROP COLUMN target_kind;
ALTER TABLE approvals DROP COLUMN target_value;
ALTER TABLE approvals DROP COLUMN consumer_account;
ALTER TABLE approvals DROP COLUMN allow_writes;
