-- Chat: conversations, their durable event log (the source of StreamConversation replays),
-- and messages with a full-text index.

-- Lets one GIN index hold both the conversation id and the text, so a user's search only
-- touches the postings of their own conversations.
CREATE EXTENSION IF NOT EXISTS btree_gin;

CREATE TABLE conversations (
    id               uuid PRIMARY KEY,
    owner            text NOT NULL,
    title            text NOT NULL,
    member_ids       text[] NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    last_activity_at timestamptz NOT NULL DEFAULT now(),
    message_count    bigint NOT NULL DEFAULT 0,
    -- The latest durable event's seq; writers take the row lock to assign the next one.
    last_seq         bigint NOT NULL DEFAULT 0,
    deleted_at       timestamptz,
    purge_at         timestamptz
);
CREATE INDEX conversations_by_owner ON conversations (owner, last_activity_at DESC, id DESC)
    WHERE deleted_at IS NULL;
CREATE INDEX conversations_by_member ON conversations USING gin (member_ids) WHERE deleted_at IS NULL;
CREATE INDEX conversations_purge ON conversations (purge_at) WHERE deleted_at IS NOT NULL;

-- Every durable event (message posted/edited/deleted, conversation updated/deleted), as the
-- encoded codingagent.chat.v1.ConversationEvent a stream delivers.
CREATE TABLE conversation_events (
    conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq             bigint NOT NULL,
    event           bytea NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);

CREATE TABLE messages (
    id              uuid PRIMARY KEY,
    conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq             bigint NOT NULL,
    author_kind     smallint NOT NULL,
    author_id       text NOT NULL,
    text            text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    edited_at       timestamptz,
    deleted_at      timestamptz,
    reply_to        uuid,
    task_id         text NOT NULL DEFAULT '',
    -- English stemming; deleted messages index nothing.
    search          tsvector GENERATED ALWAYS AS (
                        CASE WHEN deleted_at IS NULL THEN to_tsvector('english', text) ELSE ''::tsvector END
                    ) STORED,
    UNIQUE (conversation_id, seq)
);
CREATE INDEX messages_search ON messages USING gin (conversation_id, search);
