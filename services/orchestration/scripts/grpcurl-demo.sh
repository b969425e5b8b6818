#!/usr/bin/env bash
# The orchestration service from the command line with grpcurl: make a repository from an
# eval fixture, create a task against it, stream its log to the end, show the change.
# Usage: grpcurl-demo.sh HOST:PORT TOKEN [FIXTURE] (see services/orchestration/README.md).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# grpcurl comes from PyPI into the checkout's .dev/venv (./dev tools).
PATH="$here/../../../.dev/venv/bin:$PATH"
addr="${1:?usage: grpcurl-demo.sh HOST:PORT TOKEN [FIXTURE]}"
token="${2:?usage: grpcurl-demo.sh HOST:PORT TOKEN [FIXTURE]}"
fixture="$here/../eval/${3:-py-paginate}"
call() { grpcurl -plaintext -H "x-codingagent-identity: $token" -d "$2" "$addr" "codingagent.orchestration.v1.OrchestrationService/$1"; }
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

# The service clones the repository, so it must be a git repository it can read.
repo="$(mktemp -d "${TMPDIR:-/tmp}/codingagent-demo.XXXXXX")"
cp -r "$fixture/repo/." "$repo/"
git -C "$repo" init --quiet --initial-branch main
git -C "$repo" add --all
git -C "$repo" -c user.name=demo -c user.email=demo@localhost commit --quiet -m fixture
text=$(python3 -c "import tomllib,sys; print(tomllib.load(open(sys.argv[1],'rb'))['text'])" "$fixture/task.toml")
command=$(python3 -c "import tomllib,sys; print(tomllib.load(open(sys.argv[1],'rb'))['test_command'])" "$fixture/task.toml")
request=$(python3 -c 'import json,sys; print(json.dumps({"text": sys.argv[1], "repository": {"local_path": sys.argv[2]}, "test_command": sys.argv[3], "strategy": "STRATEGY_ITERATIVE", "budget": {"max_iterations": 2}}))' "$text" "$repo" "$command")
task=$(call CreateTask "$request" | field "d['task']['id']")
echo "created task $task"
# The stream replays the log, follows it live and ends when the task ends.
call StreamTaskLogs "{\"task_id\":\"$task\",\"after_seq\":0}" \
  | python3 -c '
import json, sys
buffer = ""
for line in sys.stdin:
    buffer += line
    if line.startswith("}"):
        item = json.loads(buffer); buffer = ""
        if "line" in item:
            text = item["line"].get("message", "")
            print("log", item["line"].get("seq"), text.splitlines()[0] if text else "")
        elif "end" in item:
            print("ended:", item["end"].get("state"))
'
call GetTask "{\"task_id\":\"$task\"}" | field "d['task']['state'] + ' ' + d['task'].get('failure', {}).get('message', '')"
if call GetTaskDiff "{\"task_id\":\"$task\"}" > "$repo.diff" 2>/dev/null; then
  field "d['content']" < "$repo.diff" | sed 's/^/diff /'
fi
rm -rf "$repo" "$repo.diff"
