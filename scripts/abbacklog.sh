#!/usr/bin/env bash
# Issue 28's own measurement, with ab: python's ThreadingHTTPServer
# (testdata/server.py, listen backlog 5) under `ab -r -c 50 -t 22`, replaced
# 10 times by a new `takeover --strategy handoff` each (the next once the
# one before has exited, a second apart), fenced and with --fence off, in a
# network namespace of its own. ab's "Length" failures are not failures:
# the server's body names its pid, so it changes length with the pid.
#
#   scripts/abbacklog.sh [TAKEOVER-BINARY]
#
# Prints a Markdown table: requests, failed (connect, receive, exceptions),
# requests/s, fenced/unfenced, the time the 10 swaps took. Run it under
# flock /tmp/takeover-heavy.lock: it loads both cores for about a minute.
set -euo pipefail
trap 'echo "abbacklog.sh: failed at line $LINENO" >&2' ERR
cd "$(dirname "$0")/.."
tk=${1:-}
if [ -z "$tk" ]; then go build -o /tmp/takeover-abbacklog . && tk=/tmp/takeover-abbacklog; fi
command -v ab >/dev/null || { echo "ab is not installed (apache2-utils)" >&2; exit 1; }
ns=tkab-$$
work=$(mktemp -d /tmp/abbacklog.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do timeout 20 tail --pid="$p" -f /dev/null 2>/dev/null || true; done
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up
# (Not a shell function: one started with & runs in a subshell, whose pid
# $! then is, and a TERM to it would leave takeover running.)
in_ns=(ip netns exec "$ns")

# run NAME [FLAGS...]: one row.
run() {
  local name=$1; shift
  local prev cur
  "${in_ns[@]}" "$tk" --strategy handoff "$@" --port 127.0.0.1:8100 -- python3 testdata/server.py 8100 >/dev/null 2>"$work/$name.0" & prev=$!; pids+=("$prev")
  for _ in $(seq 100); do "${in_ns[@]}" bash -c 'exec 3<>/dev/tcp/127.0.0.1/8100' 2>/dev/null && break; sleep 0.1; done
  "${in_ns[@]}" ab -r -c 50 -t 22 -n 100000000 http://127.0.0.1:8100/ > "$work/$name.ab" 2>&1 & local abp=$!
  sleep 1
  local began; began=$(date +%s.%N)
  for i in $(seq 10); do
    "${in_ns[@]}" "$tk" --strategy handoff "$@" --port 127.0.0.1:8100 -- python3 testdata/server.py 8100 >/dev/null 2>"$work/$name.$i" & cur=$!; pids+=("$cur")
    timeout 60 tail --pid="$prev" -f /dev/null || { echo "swap $i: the old takeover did not exit" >&2; return 1; }
    prev=$cur
    sleep 1
  done
  local took; took=$(echo "$(date +%s.%N) - $began" | bc)
  wait "$abp" || true
  kill -TERM "$prev"; timeout 20 tail --pid="$prev" -f /dev/null || true
  local f="$work/$name.ab"
  local reqs rps conn recv exc fenced
  reqs=$(awk '/^Complete requests/ {print $3}' "$f")
  rps=$(awk '/^Requests per second/ {print $4}' "$f")
  # (ab prints the breakdown only when something failed.)
  read -r conn recv exc < <(sed -n 's/.*(Connect: \([0-9]*\), Receive: \([0-9]*\), Length: [0-9]*, Exceptions: \([0-9]*\)).*/\1 \2 \3/p' "$f") || true
  fenced=$(cat "$work/$name".[0-9]* | grep -c 'fenced=true' || true)
  echo "$name $reqs ${conn:-0} ${recv:-0} ${exc:-0} $rps $took $fenced" >> "$work/rows"
}
run fenced
run unfenced --fence off
echo "| ab -r -c 50 -t 22, python backlog 5, 10 swaps | requests | failed (connect, receive, exceptions) | requests/s | of unfenced | 10 swaps took | swaps fenced |"
echo "|---|---:|---:|---:|---:|---:|---:|"
unf=$(awk '$1=="unfenced" {print $6}' "$work/rows")
while read -r name reqs conn recv exc rps took fenced; do
  echo "| $name | $reqs | $((conn + recv + exc)) ($conn, $recv, $exc) | $rps | $(echo "scale=2; $rps / $unf" | bc) | ${took%.*} s | $fenced of 10 |"
done < "$work/rows"
