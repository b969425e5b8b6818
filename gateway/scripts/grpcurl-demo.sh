#!/usr/bin/env bash
# The README's walkthrough through the gateway: discover the contracts by reflection (no
# proto files), call a method and follow a stream, with a user token from the gateway's
# development sign-in or any identity provider it trusts.
#   gateway/scripts/grpcurl-demo.sh [ADDR] TOKEN     (ADDR defaults to 127.0.0.1:8080)
set -euo pipefail
if (($# == 1)); then addr=127.0.0.1:8080; token="$1"; else addr="$1"; token="$2"; fi
auth=(-H "authorization: Bearer $token")

echo "services:"
grpcurl -plaintext "$addr" list
echo "describe:"
grpcurl -plaintext "$addr" describe codingagent.chat.v1.ChatService.CreateConversation
created="$(grpcurl -plaintext "${auth[@]}" -d '{"title": "Flaky login test"}' "$addr" codingagent.chat.v1.ChatService/CreateConversation)"
id="$(sed -n 's/.*"id": "\([^"]*\)".*/\1/p' <<<"$created" | head -n1)"
echo "created conversation $id"
grpcurl -plaintext "${auth[@]}" -d "{\"conversation_id\": \"$id\", \"text\": \"The login test times out on CI\"}" \
  "$addr" codingagent.chat.v1.ChatService/PostMessage >/dev/null
# The stream replays what was posted, then stays open; -max-time ends the demo.
streamed="$(grpcurl -plaintext -max-time 3 "${auth[@]}" -d "{\"conversation_id\": \"$id\"}" \
  "$addr" codingagent.chat.v1.ChatService/StreamConversation 2>/dev/null || true)"
grep -m1 '"text"' <<<"$streamed" | sed 's/^ */streamed /'
