#!/usr/bin/env bash
# The Rssminer stress test: two shell loops, each starting
#   takeover --port P -- <server>
# again and again, so that each new instance replaces whichever is serving,
# with the probe running throughout. At the end it prints what the clients
# saw and checks that no server or takeover is left behind.
#
#   scripts/stress.sh [--iterations N] [--strategy auto|handoff|rebind]
set -euo pipefail
cd "$(dirname "$0")/.."

iterations=50 strategy=auto
while [ $# -gt 0 ]; do
  case $1 in
    --iterations) iterations=$2; shift 2 ;;
    --strategy) strategy=$2; shift 2 ;;
    *) echo "usage: scripts/stress.sh [--iterations N] [--strategy auto|handoff|rebind]" >&2; exit 2 ;;
  esac
done
case $iterations in ''|*[!0-9]*) echo "--iterations $iterations: want a number from 1 to 1000" >&2; exit 2 ;; esac
if [ "$iterations" -lt 1 ] || [ "$iterations" -gt 1000 ]; then echo "--iterations $iterations: want 1 to 1000" >&2; exit 2; fi

out=bench-out
mkdir -p "$out"
CGO_ENABLED=0 go build -o "$out/takeover" .
tk=$PWD/$out/takeover
. scripts/lib.sh
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
addr=127.0.0.1:$port
started="$out/stress.pids"   # every takeover the loops started
: > "$started"

# loop N: start a takeover, wait until it serves or exits, then the next.
loop() {
  for i in $(seq "$iterations"); do
    "$tk" -q --strategy "$strategy" --port "$addr" -- "$tk" demo-server --init-delay 50ms "$addr" >/dev/null 2>>"$out/stress.err" &
    echo $! >> "$started"
    sleep 0.$((RANDOM % 3 + 1))
  done
}

"$tk" -q --strategy "$strategy" --port "$addr" -- "$tk" demo-server "$addr" >/dev/null 2>>"$out/stress.err" &
echo $! >> "$started"
for _ in $(seq 100); do curl -fs -m 1 "http://$addr/" >/dev/null 2>&1 && break; sleep 0.1; done

"$tk" probe --addr "$addr" --duration 3600s > "$out/stress.json" &
probe=$!
loop & a=$!
loop & b=$!
wait "$a" "$b"

# Let the last swaps finish: every takeover but one exits once replaced.
alive() { local n=0; while read -r p; do ours "$p" && n=$((n+1)); done < "$started"; echo $n; }
for _ in $(seq 600); do [ "$(alive)" -le 1 ] && break; sleep 0.1; done
sleep 0.5
kill -INT "$probe"; wait "$probe" || true

echo "two loops of $iterations takeovers each on $addr, strategy $strategy"
python3 - "$out/stress.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"requests {r['requests']}, failed {r['failed']} (refused {r['refused']}, resets {r['resets']}, timeouts {r['timeouts']}, other {r['other']}), "
      f"longest refused window {r['longest_refused_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms")
PY

# Stop the one left serving; then nothing of ours may remain.
while read -r p; do ours "$p" && kill -TERM "$p" 2>/dev/null || true; done < "$started"
for _ in $(seq 300); do [ "$(alive)" -eq 0 ] && break; sleep 0.1; done
left=$(alive)
servers=$(pgrep -f -- "demo-server.*$addr" | wc -l || true)
echo "takeovers left: $left, servers left: $servers"
if [ "$left" -ne 0 ] || [ "$servers" -ne 0 ]; then
  echo "FAIL: processes left behind" >&2
  exit 1
fi
if grep -q "level=ERROR" "$out/stress.err"; then
  echo "errors logged by takeover:" >&2; grep "level=ERROR" "$out/stress.err" | head >&2
fi
