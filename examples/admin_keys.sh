#!/usr/bin/env bash
# The life of an API key through earshot's admin API: create a key with credit, transcribe a file with it,
# look at its usage, revoke it.
#
# Usage:
#     EARSHOT_ADMIN_TOKEN=... bash examples/admin_keys.sh AUDIO_FILE
#
# The server is ${EARSHOT_URL:-http://127.0.0.1:8000} and must run with the same EARSHOT_ADMIN_TOKEN, e.g.
#     EARSHOT_ADMIN_TOKEN=change-me earshot serve
# Needs curl and python3 (to read the JSON answers). Reference: docs/api.md#admin-api
set -euo pipefail

URL="${EARSHOT_URL:-http://127.0.0.1:8000}"
ADMIN_TOKEN="${EARSHOT_ADMIN_TOKEN:?set EARSHOT_ADMIN_TOKEN to the admin token of the server}"
AUDIO="${1:?usage: bash examples/admin_keys.sh AUDIO_FILE}"

# field NAME: print one top-level field of the JSON object on stdin.
field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# 1. Create a key with 10 minutes of audio credit and at most 60 requests a minute.
#    The plaintext key is in this answer only: earshot stores a hash of it.
created=$(curl -sS --fail-with-body "$URL/admin/keys" \
  -H "Authorization: Bearer $ADMIN_TOKEN" \
  -H "Content-Type: application/json" \
  -d '{"name": "example-app", "credits_seconds": 600, "rpm": 60}') || { echo "$created" >&2; exit 1; }
KEY_ID=$(field id <<<"$created")
KEY=$(field key <<<"$created")
echo "created key $KEY_ID"

# 2. Transcribe with the key, exactly as an OpenAI client would (Authorization: Bearer).
echo "transcript:"
curl -sS --fail-with-body "$URL/v1/audio/transcriptions" \
  -H "Authorization: Bearer $KEY" \
  -F "file=@$AUDIO" -F model=whisper-1
echo

# 3. The key's usage, as the key itself sees it: its credit left and its totals per model.
echo "usage seen by the key:"
curl -sS --fail-with-body "$URL/v1/usage" -H "Authorization: Bearer $KEY"
echo

# 4. Revoke the key: from now on every request with it gets 401 invalid_api_key.
curl -sS --fail-with-body -X POST "$URL/admin/keys/$KEY_ID/revoke" \
  -H "Authorization: Bearer $ADMIN_TOKEN" >/dev/null
echo "revoked key $KEY_ID; a request with it now answers:"
curl -sS "$URL/v1/audio/transcriptions" -H "Authorization: Bearer $KEY" -F "file=@$AUDIO"
echo

# 5. The admin token sees every key's usage; key_id narrows it to one.
echo "usage of key $KEY_ID seen by the admin:"
curl -sS --fail-with-body "$URL/v1/usage?key_id=$KEY_ID" -H "Authorization: Bearer $ADMIN_TOKEN"
echo
