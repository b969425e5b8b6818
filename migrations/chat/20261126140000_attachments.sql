-- Attachment metadata; the bytes live in object storage under `conversations/{id}/{attachment}`.
CREATE TABLE attachments (
    id              uuid PRIMARY KEY,
    conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    -- Empty until posted with a message; unattached uploads are removed after a day.
    message_id      uuid REFERENCES messages (id) ON DELETE CASCADE,
    position        smallint NOT NULL DEFAULT 0,
    owner           text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    filename        text NOT NULL,
    content_type    text NOT NULL,
    size_bytes      bigint NOT NULL,
    sha256          text NOT NULL
);
CREATE INDEX attachments_by_conversation ON attachments (conversation_id, created_at DESC, id DESC);
CREATE INDEX attachments_by_message ON attachments (message_id, position) WHERE message_id IS NOT NULL;
CREATE INDEX attachments_unattached ON attachments (created_at) WHERE message_id IS NULL;
