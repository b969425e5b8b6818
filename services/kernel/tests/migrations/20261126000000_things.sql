-- State of a pretend service whose changes emit events, and what a pretend consumer applied.
CREATE TABLE things (id TEXT PRIMARY KEY);
CREATE TABLE applied (event_id TEXT NOT NULL, event_key TEXT, applied_at TIMESTAMPTZ NOT NULL DEFAULT now());
