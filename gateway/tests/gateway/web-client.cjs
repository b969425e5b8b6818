// A browser-style client of the gateway: @connectrpc/connect-web's grpc-web transport over
// fetch, with the service descriptors read from the proto crate's descriptor set (no code
// generation). Usage: node web-client.cjs BASE_URL DESCRIPTORS TOKEN
// Prints one JSON line per step; exits non-zero on any failure.
const fs = require("node:fs");
const { createFileRegistry, fromBinary } = require("@bufbuild/protobuf");
const { FileDescriptorSetSchema } = require("@bufbuild/protobuf/wkt");
const { createClient, ConnectError } = require("@connectrpc/connect");
const { createGrpcWebTransport } = require("@connectrpc/connect-web");

async function main() {
  const [baseUrl, descriptors, token] = process.argv.slice(2);
  const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, fs.readFileSync(descriptors)));
  const ChatService = registry.getService("codingagent.chat.v1.ChatService");
  const transport = createGrpcWebTransport({ baseUrl });
  const chat = createClient(ChatService, transport);
  const headers = { authorization: `Bearer ${token}` };
  const say = (step, value) => console.log(JSON.stringify({ step, ...value }));

  const created = await chat.createConversation({ title: "from the browser" }, { headers });
  const id = created.conversation.id;
  say("unary", { id, title: created.conversation.title });

  try {
    await chat.getConversation({ conversationId: id });
    say("anonymous", { code: "none" });
  } catch (e) {
    say("anonymous", { code: ConnectError.from(e).code });
  }

  const abort = new AbortController();
  const stream = chat.streamConversation({ conversationId: id }, { headers, signal: abort.signal });
  setTimeout(() => chat.postMessage({ conversationId: id, text: "hello over grpc-web" }, { headers }).catch(() => {}), 300);
  const deadline = setTimeout(() => abort.abort(), 10000);
  for await (const event of stream) {
    const text = JSON.stringify(event, (k, v) => (typeof v === "bigint" ? v.toString() : v));
    if (text.includes("hello over grpc-web")) {
      say("stream", { received: true });
      break;
    }
  }
  clearTimeout(deadline);
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(String(e && e.stack ? e.stack : e));
    process.exit(1);
  },
);
