#!/usr/bin/env bash
# Measures, on this machine in one run, what each way of restarting a server
# costs its clients: naive restart, the Rssminer recipe, Server::Starter,
# takeover --strategy rebind and --strategy handoff. The same server (the
# built-in demo-server: it takes --init-delay to start and drains on SIGTERM)
# is replaced --swaps times each way under the same load (takeover probe).
#
#   scripts/bench.sh [--swaps N] [--init-delay D] [--workers N] [--ab-requests N]
#                    [--crashes N] [--crash-every SECONDS] [--only swaps|crash|systemd|ab|backlog|keepalive]
#
# Writes bench-out/results.md (a Markdown table) and bench-out/timeline.png
# (failures and latency across the swaps, drawn by gnuplot). Then the crash
# scenario: the same server killed with SIGKILL every --crash-every seconds
# under the same load, restarted by a shell loop (what systemd's
# Restart=always does), by start_server, and by takeover, which holds the
# socket meanwhile: bench-out/crash.md and bench-out/crash.png. Last, ab -n
# 100000 -c 100 against takeover --strategy handoff while it is replaced
# again and again, with ab's own lines. --only systemd: `systemctl restart`
# of a plain service, of takeover without and with systemd's file
# descriptor store, and `systemctl reload`, under a real systemd 252 booted
# with systemd-nspawn (BenchmarkSystemdRestart): bench-out/systemd.md.
# --only backlog: python's ThreadingHTTPServer (listen backlog 5) under 50
# clients, replaced 10 times, fenced and with --fence off side by side, its
# socket intercepted and passed (--sockets systemd), each in a network
# namespace of its own (BenchmarkFencedSmallBacklog), and the same with ab
# (scripts/abbacklog.sh): bench-out/backlog.md.
# --only keepalive: wrk -c32 and hey -c 32 (keep-alive) through 6 HUP
# reloads 3 s apart, per real server (scripts/keepalive.sh):
# bench-out/keepalive.md.
set -euo pipefail
cd "$(dirname "$0")/.."

swaps=10 init_delay=1s workers=2 ab_requests=100000 crashes=3 crash_every=3 only=
usage="usage: scripts/bench.sh [--swaps N] [--init-delay D] [--workers N] [--ab-requests N] [--crashes N] [--crash-every SECONDS] [--only swaps|crash|systemd|ab|backlog|keepalive]"
while [ $# -gt 0 ]; do
  case $1 in
    --swaps) swaps=$2; shift 2 ;;
    --init-delay) init_delay=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --ab-requests) ab_requests=$2; shift 2 ;;
    --crashes) crashes=$2; shift 2 ;;
    --crash-every) crash_every=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
case $only in ''|swaps|crash|systemd|ab|backlog|keepalive) ;; *) echo "--only $only: want swaps, crash, systemd, ab, backlog or keepalive" >&2; exit 2 ;; esac
case $crashes in ''|*[!0-9]*) echo "--crashes $crashes: want a number from 1 to 100" >&2; exit 2 ;; esac
if [ "$crashes" -lt 1 ] || [ "$crashes" -gt 100 ]; then echo "--crashes $crashes: want a number from 1 to 100" >&2; exit 2; fi
case $crash_every in ''|*[!0-9]*) echo "--crash-every $crash_every: want whole seconds from 1 to 60" >&2; exit 2 ;; esac
if [ "$crash_every" -lt 1 ] || [ "$crash_every" -gt 60 ]; then echo "--crash-every $crash_every: want whole seconds from 1 to 60" >&2; exit 2; fi
want() { [ -z "$only" ] || [ "$only" = "$1" ]; }
case $swaps in ''|*[!0-9]*) echo "--swaps $swaps: want a number from 1 to 500" >&2; exit 2 ;; esac
if [ "$swaps" -lt 1 ] || [ "$swaps" -gt 500 ]; then echo "--swaps $swaps: want a number from 1 to 500" >&2; exit 2; fi

need=()
command -v ab >/dev/null || need+=(apache2-utils)
command -v start_server >/dev/null || need+=(libserver-starter-perl)
command -v gnuplot >/dev/null || need+=(gnuplot-nox)
command -v lsof >/dev/null || need+=(lsof)
if want systemd; then command -v systemd-nspawn >/dev/null || need+=(systemd-container); fi
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}"
  apt-get update -qq </dev/null >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" </dev/null >/dev/null
fi

out=bench-out
mkdir -p "$out"
CGO_ENABLED=0 go build -o "$out/takeover" .
tk=$PWD/$out/takeover
. scripts/lib.sh

pids=()            # every process this script started, ended by pid at exit
started="$out/bench.pids"   # every takeover started, from subshells too
: > "$started"
cleanup() {
  touch "$out/ab.stop" # the swapper, a subshell, stops between swaps
  for p in "${pids[@]}" $(cat "$started"); do ours "$p" && kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_serving() { # wait until $1 answers, up to 60s
  for _ in $(seq 600); do curl -fs -m 1 "http://$1/" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "$1 never answered" >&2; return 1
}
wait_exit() { # wait for pid $1 to exit, up to 60s
  for _ in $(seq 6000); do ours "$1" || return 0; sleep 0.01; done
  echo "pid $1 did not exit" >&2; return 1
}
now() { date +%s.%N; }

# plot_timelines PNG TITLE PREFIX "NAME...": one panel per way, the latency
# of each request of PREFIX$NAME.timeline over time, failures marked.
plot_timelines() {
  local png=$1 title=$2 prefix=$3 names=$4 n
  n=$(echo "$names" | wc -w)
  gnuplot <<GP
set terminal pngcairo size 1200,$((280 * n)) font ",10"
set output "$png"
set termoption noenhanced
set multiplot layout $n,1 title "$title"
set ylabel "latency (ms)"
set logscale y
set yrange [0.05:5000]
set key outside right
do for [w in "$names"] {
  set title w
  plot "$prefix".w.".timeline" using 1:(strcol(3) eq "ok" ? \$2 : 1/0) with dots lc rgb "#3366cc" title "answered", \
       "" using 1:(strcol(3) eq "refused" ? 2000 : 1/0) with points pt 2 lc rgb "#dd2222" title "refused", \
       "" using 1:(strcol(3) ne "ok" && strcol(3) ne "refused" ? 1000 : 1/0) with points pt 6 lc rgb "#ff9900" title "reset/failed"
}
unset multiplot
GP
}

# run_way NAME: start the first server with start_first, swap with swap_one
# $swaps times under the probe, and record the results.
run_way() {
  local name=$1 port addr
  port=$(free_port); addr=127.0.0.1:$port
  echo "== $name on $addr"
  start_first "$addr"
  wait_serving "$addr"
  # The probe runs until the swaps are done (its --duration is an upper bound).
  "$tk" probe --addr "$addr" --workers "$workers" --duration 600s --timeline "$out/$name.timeline" > "$out/$name.json" &
  local probe=$!; pids+=("$probe")
  sleep 0.5
  local t0 t1 total=0
  for i in $(seq "$swaps"); do
    t0=$(now)
    swap_one "$addr"
    t1=$(now)
    total=$(echo "$total + $t1 - $t0" | bc -l)
    printf '\r   swap %d/%d' "$i" "$swaps"
  done
  echo
  sleep 0.5
  kill -INT "$probe" 2>/dev/null || true
  wait "$probe" 2>/dev/null || true
  stop_last
  printf '%s %s\n' "$name" "$(echo "scale=3; $total / $swaps" | bc -l)" >> "$out/durations"
}

# 1. naive: stop the old, start the new.
naive_first() { "$tk" demo-server --init-delay "$init_delay" "$1" >/dev/null & cur=$!; pids+=("$cur"); }
naive_swap() { kill -TERM "$cur"; wait_exit "$cur"; naive_first "$1"; wait_serving "$1"; }
naive_stop() { kill -TERM "$cur"; wait_exit "$cur"; }

# 2. the Rssminer recipe: the new process initializes, kills the listener
#    (lsof | xargs kill), retries bind every 150 ms up to 30 times.
rss_first() { "$tk" demo-server --init-delay "$init_delay" --rssminer "$1" >/dev/null & cur=$!; pids+=("$cur"); }
rss_swap() { local old=$cur; rss_first "$1"; wait_exit "$old"; wait_serving "$1"; }

# 3. Server::Starter: HUP per swap; the app reads SERVER_STARTER_PORT.
starter_first() {
  start_server --port "$1" --signal-on-hup=TERM --kill-old-delay=0 --interval=0 -- \
    "$tk" demo-server --init-delay "$init_delay" "$1" >/dev/null 2>"$out/start_server.log" & cur=$!; pids+=("$cur")
}
starter_swap() { # HUP, then wait until a new generation's pid answers
  local before after
  before=$(curl -fs -m 2 "http://$1/" | cut -d' ' -f1)
  kill -HUP "$cur"
  for _ in $(seq 600); do
    after=$(curl -fs -m 1 "http://$1/" 2>/dev/null | cut -d' ' -f1 || true)
    [ -n "$after" ] && [ "$after" != "$before" ] && return 0
    sleep 0.05
  done
  echo "Server::Starter did not swap" >&2; return 1
}
starter_stop() { kill -TERM "$cur"; wait_exit "$cur"; }

# 4, 5. takeover: a new takeover per swap; the old one exits 0 once replaced.
tk_first() { "$tk" -q --strategy "$strategy" --port "$1" -- "$tk" demo-server --init-delay "$init_delay" "$1" >/dev/null & cur=$!; pids+=("$cur"); echo "$cur" >> "$started"; }
tk_swap() { local old=$cur; tk_first "$1"; wait_exit "$old"; }

start_first() { "$start_first" "$@"; }; swap_one() { "$swap_one" "$@"; }; stop_last() { "$stop_last"; }
if want swaps; then
rm -f "$out/durations" "$out/ab.swaps" "$out/ab.stop"
start_first=naive_first swap_one=naive_swap stop_last=naive_stop
run_way naive
start_first=rss_first swap_one=rss_swap; run_way rssminer
start_first=starter_first swap_one=starter_swap stop_last=starter_stop; run_way server-starter
strategy=rebind start_first=tk_first swap_one=tk_swap stop_last=naive_stop; run_way takeover-rebind
strategy=handoff; run_way takeover-handoff

# The table.
{
  echo "| way | swaps | requests | failed | refused | resets | longest refused window | p50 | p99 | max latency | swap duration |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for name in naive rssminer server-starter takeover-rebind takeover-handoff; do
    python3 - "$out/$name.json" "$name" "$swaps" "$(awk -v n="$name" '$1==n {print $2}' "$out/durations")" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"| {sys.argv[2]} | {sys.argv[3]} | {r['requests']} | {r['failed']} | {r['refused']} | {r['resets']} | "
      f"{r['longest_refused_ms']:.1f} ms | {r['p50_ms']:.2f} ms | {r['p99_ms']:.2f} ms | {r['max_ms']:.1f} ms | {float(sys.argv[4]):.2f} s |")
PY
  done
} > "$out/results.md"
echo
cat "$out/results.md"

# The picture: one panel per way, latency of each request over time, failures marked.
plot_timelines "$out/timeline.png" "Each request over time while the server is replaced $swaps times (init delay $init_delay)" \
  "$out/" "naive rssminer server-starter takeover-rebind takeover-handoff"
echo "wrote $out/results.md and $out/timeline.png"
fi

# The crash scenario: the server dies of SIGKILL every $crash_every s under
# load, $crashes times, and is started again by its supervisor.
server_of() { # the demo-server running under supervisor pid $1
  local c
  for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
    ours "$c" || continue
    case $(tr '\0' ' ' < /proc/"$c"/cmdline) in "$tk demo-server"*) echo "$c"; return 0 ;; esac
  done
  return 1
}
run_crashes() { # run_crashes NAME: start_first, then kill its server $crashes times
  local name=$1 port addr victim
  port=$(free_port); addr=127.0.0.1:$port
  echo "== crash: $name on $addr"
  start_first "$addr"
  wait_serving "$addr"
  "$tk" probe --addr "$addr" --workers "$workers" --duration 600s --timeline "$out/crash-$name.timeline" > "$out/crash-$name.json" &
  local probe=$!; pids+=("$probe")
  for i in $(seq "$crashes"); do
    sleep "$crash_every"
    victim=$(server_of "$cur") || { echo "no server under pid $cur" >&2; return 1; }
    kill -KILL "$victim"
    printf '\r   crash %d/%d' "$i" "$crashes"
  done
  sleep "$crash_every"
  echo
  kill -INT "$probe" 2>/dev/null || true
  wait "$probe" 2>/dev/null || true
  stop_last
}
loop_first() { # a shell loop, as Restart=always: a new server when the old one dies
  rm -f "$out/loop.stop"
  ( while [ ! -e "$out/loop.stop" ]; do "$tk" demo-server --init-delay "$init_delay" "$1" >/dev/null 2>&1 || true; done ) & cur=$!; pids+=("$cur")
}
loop_stop() {
  touch "$out/loop.stop"
  local s; s=$(server_of "$cur") && kill -TERM "$s"
  wait "$cur" 2>/dev/null || true
}
tk_crash_first() { "$tk" -q --port "$1" -- "$tk" demo-server --init-delay "$init_delay" "$1" >/dev/null 2>"$out/crash-takeover.log" & cur=$!; pids+=("$cur"); echo "$cur" >> "$started"; }
starter_crash_first() {
  start_server --port "$1" --interval=0 -- "$tk" demo-server --init-delay "$init_delay" "$1" >/dev/null 2>"$out/start_server-crash.log" & cur=$!; pids+=("$cur")
}
if want crash; then
  start_first=loop_first stop_last=loop_stop; run_crashes restart-loop
  start_first=starter_crash_first stop_last=starter_stop; run_crashes start_server
  start_first=tk_crash_first stop_last=naive_stop; run_crashes takeover
  {
    echo "| restarted by | crashes | requests | failed | refused | resets | longest refused window | p99 | max latency |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for name in restart-loop start_server takeover; do
      python3 - "$out/crash-$name.json" "$name" "$crashes" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"| {sys.argv[2]} | {sys.argv[3]} | {r['requests']} | {r['failed']} | {r['refused']} | {r['resets']} | "
      f"{r['longest_refused_ms']:.1f} ms | {r['p99_ms']:.2f} ms | {r['max_ms']:.1f} ms |")
PY
    done
  } > "$out/crash.md"
  echo
  cat "$out/crash.md"
  plot_timelines "$out/crash.png" "Each request over time while the server is killed (SIGKILL) $crashes times (init delay $init_delay)" \
    "$out/crash-" "restart-loop start_server takeover"
  echo "wrote $out/crash.md and $out/crash.png"
fi
if want systemd; then
  echo
  echo "== under systemd 252 (systemd-nspawn): systemctl restart x3 and reload x3 under 2 clients"
  go test -count=1 -run '^$' -bench BenchmarkSystemdRestart -benchtime 1x . | grep '^|' > "$out/systemd.md"
  cat "$out/systemd.md"
  echo "wrote $out/systemd.md"
fi
if want backlog; then
  echo
  echo "== python ThreadingHTTPServer (backlog 5), 50 clients, 10 swaps: fenced and unfenced, intercepted and passed"
  go test -count=1 -run '^$' -bench BenchmarkFencedSmallBacklog -benchtime 1x . | grep '^|' > "$out/backlog.md"
  echo >> "$out/backlog.md"
  scripts/abbacklog.sh "$tk" >> "$out/backlog.md"
  cat "$out/backlog.md"
  echo "wrote $out/backlog.md"
fi
if want keepalive; then
  echo
  echo "== keep-alive clients (wrk -c32, hey -c 32) through 6 reloads 3 s apart, per server"
  scripts/keepalive.sh "$tk" > "$out/keepalive.md"
  cat "$out/keepalive.md"
  echo "wrote $out/keepalive.md"
fi
want ab || exit 0

# The seed test of Node's cluster reload: ab against a takeover-managed
# server while it is handed over again and again.
port=$(free_port); addr=127.0.0.1:$port
strategy=handoff; init_delay=0s
tk_first "$addr"; wait_serving "$addr"
rm -f "$out/ab.stop"
( for i in $(seq 1000); do [ -e "$out/ab.stop" ] && break; tk_swap "$addr"; echo "$i" > "$out/ab.swaps"; sleep 0.2; done ) & swapper=$!; pids+=("$swapper")
echo
echo "== ab -n $ab_requests -c 100 against takeover --strategy handoff, replaced every ~0.2s"
ab -n "$ab_requests" -c 100 "http://$addr/" 2>&1 | grep -E "Complete requests|Failed requests|\(Connect:|Non-2xx|Requests per second|Time taken"
touch "$out/ab.stop"; wait "$swapper" 2>/dev/null || true # ends after its swap under way
echo "swaps during ab: $(cat "$out/ab.swaps" 2>/dev/null || echo 0)"
for p in $(cat "$started"); do ours "$p" && kill -TERM "$p" && wait_exit "$p" || true; done
left=0
for p in $(cat "$started"); do ours "$p" && left=$((left + 1)); done
echo "takeovers left: $left"
[ "$left" -eq 0 ]
