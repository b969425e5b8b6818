#!/usr/bin/env bash
# The chat service from the command line with grpcurl: create a conversation, post, search,
# and stream it. Usage: grpcurl-demo.sh HOST:PORT TOKEN (see services/chat/README.md).
set -euo pipefail
# grpcurl comes from PyPI into the checkout's .dev/venv (./dev tools).
PATH="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)/.dev/venv/bin:$PATH"
addr="${1:?usage: grpcurl-demo.sh HOST:PORT TOKEN}"
token="${2:?usage: grpcurl-demo.sh HOST:PORT TOKEN}"
call() { grpcurl -plaintext -H "x-codingagent-identity: $token" -d "$2" "$addr" "codingagent.chat.v1.ChatService/$1"; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

conversation=$(call CreateConversation '{"title":"Flaky login test"}' | field "['conversation']['id']")
echo "created conversation $conversation"
call PostMessage "{\"conversation_id\":\"$conversation\",\"text\":\"The login test times out on CI about one run in five\"}" \
  | field "['message']['seq']" | sed 's/^/posted message with seq /'
call SearchMessages '{"query":"login test"}' | field "['results'][0]['message']['text']" | sed 's/^/found: /'
# A stream never ends by itself: read what it replays for two seconds.
timeout 2 grpcurl -plaintext -H "x-codingagent-identity: $token" \
  -d "{\"conversation_id\":\"$conversation\",\"after_seq\":0}" "$addr" \
  codingagent.chat.v1.ChatService/StreamConversation | grep -o '"text": "[^"]*"' | sed 's/^/streamed /' || true
