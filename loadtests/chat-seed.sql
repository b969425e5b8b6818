-- Seeds the chat schema with a large, realistic history for the search benchmark: :users
-- users, each owning :conversations conversations with one or two members, and :messages
-- messages in all, whose texts are 1 to 3 real change descriptions from the classifier's seed
-- corpus (loaded into chat_bench_corpus by chat-search.sh). Run against the dev database:
--   psql -v users=2000 -v conversations=10 -v messages=1000000 -f loadtests/chat-seed.sql
SET search_path TO chat, public;
\timing on

INSERT INTO conversations (id, owner, title, member_ids, created_at, last_activity_at)
SELECT gen_random_uuid(), 'bench-' || u, 'bench conversation ' || c,
       (ARRAY['bench-' || ((u + 7) % :users), 'bench-' || ((u + 13) % :users)])[1:1 + (c % 2)],
       now() - interval '400 days', now() - interval '400 days'
FROM generate_series(1, :users) u, generate_series(1, :conversations) c;

CREATE TEMP TABLE bench_conversations AS
SELECT id, row_number() OVER (ORDER BY id) AS n FROM conversations WHERE owner LIKE 'bench-%';
CREATE TEMP TABLE bench_corpus AS SELECT text, row_number() OVER () AS n FROM chat_bench_corpus;
CREATE INDEX ON bench_corpus (n);
ANALYZE bench_corpus;

-- Each message: a random conversation, a time in the last 400 days, 1-3 corpus lines.
INSERT INTO messages (id, conversation_id, seq, author_kind, author_id, text, created_at, updated_at)
SELECT gen_random_uuid(), c.id, m.i, 1, 'bench-author',
       (SELECT string_agg(b.text, ' ') FROM bench_corpus b
         WHERE b.n IN (1 + (hashint8(m.i) & 2147483647) % (SELECT count(*) FROM bench_corpus),
                       1 + (hashint8(m.i * 3) & 2147483647) % (SELECT count(*) FROM bench_corpus) * (m.i % 2),
                       1 + (hashint8(m.i * 7) & 2147483647) % (SELECT count(*) FROM bench_corpus) * (m.i % 3 / 2))),
       now() - (m.i % 400) * interval '1 day' - (m.i % 86400) * interval '1 second',
       now()
FROM generate_series(1, :messages) m(i)
JOIN bench_conversations c ON c.n = 1 + (hashint8(m.i * 11) & 2147483647) % (SELECT count(*) FROM bench_conversations);

ANALYZE conversations;
ANALYZE messages;
