-- Keys are scoped by the effective user (a service acting for a user shares that user's
-- scope), and each remembers a fingerprint of the request it answered, so a reused
-- request_id with a different request is refused instead of replaying the wrong answer.
ALTER TABLE idempotency_keys RENAME COLUMN caller TO scope;
ALTER TABLE idempotency_keys ADD COLUMN fingerprint BYTEA;
