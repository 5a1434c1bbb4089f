#!/usr/bin/env bash
# API fuzzing with schemathesis against a running server, with many more examples than the test
# suite's tests/system/test_fuzz.py. Starts uvicorn on a free port with a fresh embedded data folder,
# creates an admin key, seeds a few objects, runs the schemathesis CLI over every operation, sends
# hostile inputs (tests/system/hostile.py: internal callback URLs, identifiers where they must not go),
# prints the summaries and stops the server it started.
#
#   bench/fuzz.sh                        # 300 examples per operation, at most 600 s
#   FUZZ_EXAMPLES=1000 FUZZ_MAX_TIME=1200 bench/fuzz.sh
#   FUZZ_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/fuzz bench/fuzz.sh   # an empty database
#   FUZZ_WORKERS=1 (schemathesis workers; more than one has hit thread-safety errors in its
#   generators), FUZZ_SEED=N (reproduce a run)
#
# Exit status: schemathesis's (0 when no check failed).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="$ROOT/.venv/bin"
EXAMPLES="${FUZZ_EXAMPLES:-300}"
MAX_TIME="${FUZZ_MAX_TIME:-600}"
CHECKS="not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance"

test -x "$BIN/schemathesis" || { echo "schemathesis is missing: $BIN/pip install -e '.[test]'" >&2; exit 2; }

WORK="$(mktemp -d -t obliviate-fuzz-XXXXXX)"
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

export OBLIVIATE_DATA_DIR="$WORK/data"
export OBLIVIATE_LOG_LEVEL=WARNING
if [ -n "${FUZZ_DATABASE_URL:-}" ]; then
    export OBLIVIATE_DATABASE_URL="$FUZZ_DATABASE_URL"
    export OBLIVIATE_SECRET_KEY="${OBLIVIATE_SECRET_KEY:-$("$BIN/python" -c 'import secrets; print(secrets.token_hex(32))')}"
fi
cd "$ROOT"

"$BIN/obliviate" db upgrade >/dev/null
KEY="$("$BIN/obliviate" keys create --name fuzz --scopes admin --client fuzz 2>/dev/null | awk '/key:/ {print $2}')"
test -n "$KEY" || { echo "could not create an API key" >&2; exit 2; }

PORT="$("$BIN/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
BASE="http://127.0.0.1:$PORT"
# As compose runs it: forwarding headers from no proxy (uvicorn's default believes loopback).
"$BIN/uvicorn" app.main:create_app --factory --host 127.0.0.1 --port "$PORT" --log-level warning --no-access-log \
    --forwarded-allow-ips="" \
    >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do
    if "$BIN/python" -c "import httpx, sys; sys.exit(httpx.get('$BASE/healthz').status_code != 200)" 2>/dev/null; then break; fi
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "the server did not start:" >&2; cat "$WORK/server.log" >&2; exit 2; }
    sleep 0.2
done

# A few real objects, so that lists and reads have bodies to check.
"$BIN/python" - "$BASE" "$KEY" "$WORK/dataset_version" <<'EOF'
import sys, uuid
import httpx
sys.path.insert(0, ".")
from tests.objects import digits_csv, logistic_weights
import json

base, key = sys.argv[1], sys.argv[2]
headers = {"Authorization": f"Bearer {key}"}
with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
    # The dataset first: it makes user_id a kind this client holds, so requests by it are accepted.
    form = {"name": "digits", "subject_column": "user_id", "subject_kind": "user_id", "label_column": "digit"}
    dataset = client.post("/v1/datasets", data=form, files={"file": ("digits.csv", digits_csv())})
    dataset.raise_for_status()
    for _ in range(5):
        body = {"subject": {"identifiers": {"user_id": f"fuzz-{uuid.uuid4().hex}"}}, "jurisdiction": "gdpr", "source": "portal"}
        client.post("/v1/erasure-requests", json=body).raise_for_status()
    metadata = {"name": "digits-lr", "family": "logistic_regression", "dataset_version_id": dataset.json()["id"],
                "record_ids": list(range(100))}
    client.post("/v1/models/import", data={"metadata": json.dumps(metadata)},
                files={"weights": ("w.safetensors", logistic_weights())}).raise_for_status()
    with open(sys.argv[3], "w") as sink:
        sink.write(f'{dataset.json()["id"]} {dataset.json()["dataset_id"]}')
print("seeded: 5 erasure requests, 1 dataset, 1 imported model")
EOF

echo "fuzzing $BASE: $EXAMPLES examples per operation, at most $MAX_TIME s"
status=0
"$BIN/schemathesis" run "$BASE/openapi.json" \
    --header "Authorization: Bearer $KEY" \
    --checks "$CHECKS" \
    --max-examples "$EXAMPLES" \
    --max-time "$MAX_TIME" \
    --workers "${FUZZ_WORKERS:-1}" \
    --suppress-health-check all \
    --request-timeout 30 \
    ${FUZZ_SEED:+--seed "$FUZZ_SEED"} || status=$?

# The stateful phase may rotate or revoke the fuzzing key itself (it lists the keys it may act on),
# so the hand-written cases below take a key of their own, made after it.
HOSTILE_KEY="$("$BIN/obliviate" keys create --name fuzz-hostile --scopes admin --client fuzz 2>/dev/null | awk '/key:/ {print $2}')"

# Hostile inputs the generated cases rarely hit: internal callback URLs in every spelling, and
# identifiers as field names, external ids and disguised in reasons (tests/system/hostile.py).
"$BIN/python" - "$BASE" "$HOSTILE_KEY" "$EXAMPLES" "${FUZZ_SEED:-0}" <<'EOF' || status=1
import sys
import httpx
sys.path.insert(0, ".")
from tests.system.hostile import cases

base, key, count, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
failed = 0
with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
    for label, body, secret in cases(count * 5, seed):
        response = client.post("/v1/erasure-requests", json=body)
        if response.status_code != 422 or secret.lower() in response.text.lower():
            failed += 1
            print(f"FAILED {label}: {response.status_code}")
print(f"hostile inputs: {count * 5} sent, {failed} not refused or echoed")
sys.exit(1 if failed else 0)
EOF

# Hostile inputs to other endpoints (tests/system/hostile.py, endpoint_cases), and a burst of bad
# sign-ins under rotating X-Forwarded-For: the limit counts the peer, exactly.
read -r VERSION_ID DATASET_ID < "$WORK/dataset_version" || true  # no newline at the end of the file
"$BIN/python" - "$BASE" "$HOSTILE_KEY" "$VERSION_ID" "$DATASET_ID" <<'EOF' || status=1
import re, sys
from concurrent.futures import ThreadPoolExecutor
import httpx
sys.path.insert(0, ".")
from tests.system.hostile import endpoint_cases

base, key, version_id, dataset_id = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
failed = 0
with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
    for label, method, path, arguments, expected in endpoint_cases(version_id, dataset_id):
        status = client.request(method, path, **arguments).status_code
        if status != expected:
            failed += 1
            print(f"FAILED {label}: {status}, expected {expected}")
with httpx.Client(base_url=base, timeout=60) as browser:
    token = re.search(r'name="csrf_token" value="([^"]+)"', browser.get("/admin/login").text).group(1)

    def sign_in(n):
        return browser.post("/admin/login", data={"api_key": "obl_fuzz-guess", "csrf_token": token},
                            headers={"X-Forwarded-For": f"203.0.113.{n % 250}"}).status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = sorted(pool.map(sign_in, range(40)))
    if answers != [401] * 10 + [429] * 30:
        failed += 1
        print(f"FAILED 40 parallel bad sign-ins with rotating X-Forwarded-For: {answers.count(401)}x401")
print(f"hostile endpoint inputs: {failed} not answered as expected")
sys.exit(1 if failed else 0)
EOF

errors="$(grep -c -E 'ERROR|Traceback' "$WORK/server.log" || true)"
echo "server log: $errors error lines"
if [ "$errors" != "0" ]; then grep -E -A3 'ERROR|Traceback' "$WORK/server.log" | head -60; fi
exit "$status"
