#!/usr/bin/env bash
# Creates a conversation for the load tests and prints its id. Usage: chat-conversation.sh [USER]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PWD/.dev/venv/bin:$PATH"
token=$(./dev token --user "${1:-fanout}")
grpcurl -plaintext -H "x-codingagent-identity: $token" -d '{"title":"load test"}' 127.0.0.1:50055 \
  codingagent.chat.v1.ChatService/CreateConversation \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["conversation"]["id"])'
