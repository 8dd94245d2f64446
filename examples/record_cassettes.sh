#!/usr/bin/env bash
# Re-record the cassettes of test_jobs_with_cassettes.py against a fresh fake Buildkite.
#
#   bash examples/record_cassettes.sh        # PYTHON=/path/to/python to use another interpreter
#
# It starts `bkjobs fake-server --sample` on a free loopback port, points the plugin at it with
# --bk-api-url, records with --bk-record, and stops the server. No real token is involved, and
# the fake's token is redacted from the files anyway. The fake's job ids are seeded, so a
# re-recording gives the same requests. To record against the real API, see the README.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-$here/../.venv/bin/python}"
cd "$here"

settings="$(mktemp)"
"$python" -m pytest_bkjobs fake-server --sample --port 0 >"$settings" &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -f "$settings"' EXIT

# The server prints the settings to use, then "Press Ctrl-C to stop.".
for _ in $(seq 100); do
  grep -q "Press Ctrl-C" "$settings" && break
  kill -0 "$server" 2>/dev/null || { cat "$settings" >&2; exit 1; }
  sleep 0.1
done
setting() { sed -n "s/^ *$1=//p" "$settings"; }
url="$(setting BUILDKITE_API_URL)"
if [ -z "$url" ]; then
  echo "record_cassettes.sh: the fake server did not start:" >&2
  cat "$settings" >&2
  exit 1
fi

BUILDKITE_API_TOKEN="$(setting BUILDKITE_API_TOKEN)" \
BUILDKITE_ORGANIZATION_SLUG="$(setting BUILDKITE_ORGANIZATION_SLUG)" \
  "$python" -m pytest test_jobs_with_cassettes.py --bk-record --bk-api-url "$url" \
  -p no:cacheprovider -q "$@"
