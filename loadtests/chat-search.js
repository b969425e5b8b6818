// Search latency over a large history (seeded by chat-search.sh): each request is one
// bench user's query, half rare terms and half common ones, some restricted to recent days.
//
//   loadtests/chat-search.sh            # seeds once, mints tokens, then runs this script
//
// Bounded: 4 virtual users for 30 s, loopback only (latency, not throughput).
import grpc from 'k6/net/grpc';
import { lazyClient } from './lib/client.js';
import { check } from 'k6';

export const options = {
  scenarios: { search: { executor: 'constant-vus', vus: Number(__ENV.VUS || 4), duration: __ENV.DURATION || '30s' } },
  thresholds: { grpc_req_duration: ['p(95)<20'], checks: ['rate>0.999'] },
};

const address = __ENV.CHAT_ADDR || '127.0.0.1:50055';
const tokens = open(__ENV.TOKENS).split('\n').filter((t) => t.length > 0);
const rare = ['deadlock', 'ssrf', 'microversion', 'segfault', 'virtiofs', 'hugepages', 'idempotent', 'kerberos'];
const common = ['fix', 'test', 'update', 'add support', 'remove', 'bump version', 'documentation', 'error'];
const client = lazyClient(address);

export default function () {
  const n = Math.floor(Math.random() * 1e9);
  const terms = n % 2 === 0 ? rare : common;
  const request = { query: terms[n % terms.length], pageSize: 20 };
  if (n % 5 === 0) {
    request.startTime = new Date(Date.now() - 30 * 86400 * 1000).toISOString();
  }
  const response = client().invoke('codingagent.chat.v1.ChatService/SearchMessages', request, {
    metadata: { 'x-codingagent-identity': tokens[n % tokens.length] },
  });
  check(response, { 'search ok': (r) => r && r.status === grpc.StatusOK });
}
