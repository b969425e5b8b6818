#!/usr/bin/env bash
# The chat search benchmark: seeds the dev database with a large history once (1,000,000
# messages by default), prints the query plan of one user's search, then runs
# chat-search.js against the running platform. Needs `./dev up`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
set -a; . .dev/env; set +a
export PATH="$PWD/.dev/venv/bin:$PATH"
MESSAGES="${MESSAGES:-1000000}" USERS="${USERS:-2000}"
psql_() { psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -q "$@"; }

seeded=$(psql_ -tA -c "SELECT count(*) FROM chat.messages WHERE author_id = 'bench-author'")
if (( seeded < MESSAGES )); then
  echo "seeding $MESSAGES messages (takes minutes)"
  corpus=$(mktemp)
  zcat services/classifier/corpus/seed.jsonl.gz \
    | python3 -c 'import json,sys; [print(json.loads(l)["text"].replace("\\","\\\\").replace("\t"," ").replace("\n"," ")) for l in sys.stdin]' >"$corpus"
  psql_ -c "DROP TABLE IF EXISTS chat_bench_corpus; CREATE TABLE chat_bench_corpus (text text)"
  psql_ -c "\\copy chat_bench_corpus FROM '$corpus'"
  psql_ -v users="$USERS" -v conversations=10 -v messages="$MESSAGES" -f loadtests/chat-seed.sql
  psql_ -c "DROP TABLE chat_bench_corpus"
  rm -f "$corpus"
fi
psql_ -tA -c "SELECT 'messages: ' || count(*) FROM chat.messages"

echo "query plan of one user's search for a common term:"
psql_ -c "SET search_path TO chat" -c "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
  WITH q AS (SELECT websearch_to_tsquery('english', 'fix') AS q),
  visible AS (SELECT id, title FROM conversations WHERE deleted_at IS NULL AND (owner = 'bench-42' OR member_ids @> ARRAY['bench-42'])),
  hits AS (SELECT m.id, m.conversation_id, m.created_at, ts_rank_cd(m.search, q.q) AS rank
           FROM visible v CROSS JOIN q CROSS JOIN LATERAL (
             SELECT * FROM messages m WHERE m.conversation_id = v.id AND m.search @@ q.q) m)
  SELECT * FROM hits ORDER BY rank DESC, created_at DESC, id DESC LIMIT 21"

tokens=$(mktemp)
for i in $(seq 1 200); do ./dev token --user "bench-$(( (i * 7) % USERS ))"; done >"$tokens"
TOKENS="$tokens" k6 run --quiet loadtests/chat-search.js
rm -f "$tokens"
