#!/usr/bin/env bash
# `make demo`: builds the demo world and bundle under $VAR if missing (or if the offline code
# changed since they were built), then runs offerd in the foreground on them and prints the
# command that asks it for offers. Ctrl-C stops it cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
VAR=${VAR:-var}
PYTHON=${PYTHON:-/usr/bin/python3}
LISTEN=${LISTEN:-0.0.0.0:50051}
ADMIN_LISTEN=${ADMIN_LISTEN:-127.0.0.1:50052}
export OMP_NUM_THREADS=1

mkdir -p "$VAR/snapshots" "$VAR/logs"
stamp="$VAR/world/.offline-code.sha256"
code_hash=$(cat offline/*.py docs/snapshot-format.md | sha256sum | cut -d' ' -f1)
if [[ ! -f "$VAR/world/users.jsonl" || ! -f "$stamp" || "$(cat "$stamp")" != "$code_hash" ]] \
   || ! ls -d "$VAR"/snapshots/[0-9A-Za-z]* >/dev/null 2>&1; then
  echo "demo: building the demo world and bundle (offline code changed or nothing built yet)"
  rm -rf "$VAR/world"
  "$PYTHON" -m offline build --out "$VAR/world" --snapshot-root "$VAR/snapshots"
  echo "$code_hash" > "$stamp"
fi

port_file="$VAR/offerd.port"
rm -f "$port_file"
"$BUILD_DIR/bin/offerd" --listen="$LISTEN" --admin_listen="$ADMIN_LISTEN" \
  --snapshot_root="$VAR/snapshots" --db_path="$VAR/db" \
  --ingest="$VAR/world/users.jsonl" --port_file="$port_file" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid' INT TERM
for _ in $(seq 1 600); do
  [[ -f "$port_file" ]] && break
  kill -0 $pid 2>/dev/null || { wait $pid; exit $?; }
  sleep 0.1
done
port=$(cat "$port_file")
# The policy rightly shows nothing to users for whom no offer earns money: print a user who
# gets offers (the first of the first 200 with a non-empty list).
user=""
for candidate in $(sed -n '2,201p' "$VAR/world/users.jsonl" | "$PYTHON" -c 'import json,sys; [print(json.loads(l)["user_id"]) for l in sys.stdin]'); do
  user=${user:-$candidate}
  if "$BUILD_DIR/bin/offerctl" --addr="127.0.0.1:$port" recommend --user="$candidate" --n=5 \
       --channel=web 2>/dev/null | grep -q '"offer_id"'; then
    user=$candidate
    break
  fi
done
cat <<MSG

offerd is serving on port $port (admin on $ADMIN_LISTEN). Ask it for offers:

  $BUILD_DIR/bin/offerctl --addr=127.0.0.1:$port recommend --user=$user --n=5 --explain --channel=web

Stop it with Ctrl-C.
MSG
wait $pid
