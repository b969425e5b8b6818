// One gRPC connection per virtual user, described by the server's reflection. k6 only lets
// VU code connect (not the init stage), so the connection opens on first use.
import grpc from 'k6/net/grpc';

export function lazyClient(address) {
  const client = new grpc.Client();
  let connected = false;
  return () => {
    if (!connected) {
      client.connect(address, { plaintext: true, reflect: true });
      connected = true;
    }
    return client;
  };
}
