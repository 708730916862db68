#!/usr/bin/env bash
# Keep-alive clients through reloads (issue 30): wrk -t2 -c32 -d24s (HTTP/1.1
# keep-alive) against a server under takeover, and kill -HUP of takeover
# every 3 seconds (6 reloads); then the same with hey -c 32 (Go's net/http
# client, which retries a GET on a keep-alive connection the server closed),
# and with hey -c 32 -q 5 (each client sends 5 requests a second: keep-alive
# connections with think time, idle between requests, as a browser's or a
# proxy's are).
# Per server: wrk's requests and errors, reloads done of 6 (generations that
# took over before the load ended), and hey's errors; and, for the servers
# that have a reload of their own (nginx, gunicorn, puma), wrk through 6 of
# those, without takeover, the same way.
#
#   scripts/keepalive.sh [TAKEOVER-BINARY] [SERVER...]
#
# Servers: go (testdata/naive: http.ListenAndServe, no signal handling;
# Go 1.24 and later listen with MPTCP, which takeover cannot fence), go-tcp
# (the same with GODEBUG=multipathtcp=0: plain TCP, fenced),
# node (testdata/naive_server.js, no TERM handler), nginx (--signal QUIT),
# gunicorn (-w 2), puma (-w 2), uvicorn (--workers 2); the ones not
# installed are skipped. Run it under flock /tmp/takeover-heavy.lock: it
# loads both cores for 30 s a server. scripts/bench.sh --only keepalive
# runs it with the takeover it builds and writes bench-out/keepalive.md.
set -euo pipefail
cd "$(dirname "$0")/.."
tk=${1:-}
if [ -z "$tk" ]; then go build -o /tmp/takeover-keepalive . && tk=/tmp/takeover-keepalive; fi
shift || true
servers=("$@")
[ ${#servers[@]} -gt 0 ] || servers=(go go-tcp node nginx gunicorn puma uvicorn)
reloads=6 every=3 duration=24
work=$(mktemp -d /tmp/keepalive.XXXXXX)
tkpid=
cleanup() { [ -z "$tkpid" ] || kill "$tkpid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_serving() { for _ in $(seq 600); do curl -fs -m 1 "http://$1/" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "$1 never answered" >&2; return 1; }
python_with() { for py in python3 /usr/bin/python3; do "$py" -c "import $1" 2>/dev/null && { echo "$py"; return; }; done; }

# argv NAME PORT: the server's command line (empty: not installed).
argv() {
  local real=$PWD/testdata/real
  case $1 in
    go) go build -o "$work/naive-go" ./testdata/naive && echo "$work/naive-go 127.0.0.1:$2" ;;
    go-tcp) go build -o "$work/naive-go" ./testdata/naive && echo "env GODEBUG=multipathtcp=0 $work/naive-go 127.0.0.1:$2" ;;
    node) command -v node >/dev/null && echo "node $PWD/testdata/naive_server.js $2" ;;
    nginx)
      command -v nginx >/dev/null || return 0
      sed -e "s|@PORT@|$2|g" -e "s|@DIR@|$work|g" "$real/nginx.conf" > "$work/nginx.conf"
      echo "nginx -p $work -e $work/error.log -c $work/nginx.conf" ;; # and -g 'daemon off;' (run)
    gunicorn) command -v gunicorn >/dev/null && echo "gunicorn --chdir $real --workers 2 --bind 127.0.0.1:$2 wsgi_app:app" ;;
    puma) command -v puma >/dev/null && echo "puma --config $real/puma.rb -w 2 --bind tcp://127.0.0.1:$2 $real/config.ru" ;;
    uvicorn) local py; py=$(python_with uvicorn); [ -n "$py" ] && echo "$py -m uvicorn --no-access-log --workers 2 --app-dir $real --host 127.0.0.1 --port $2 asgi_app:app" ;;
  esac
}

# run SERVER CLIENT: one server under takeover, CLIENT's load, 6 HUPs.
run() {
  local port cmd log sig=TERM
  [ "$1" != nginx ] || sig=QUIT
  port=$(free_port)
  cmd=$(argv "$1" "$port") || true
  [ -n "$cmd" ] || { echo "| $1 | not installed | | | |"; return; }
  log=$work/$1.$2.log
  # shellcheck disable=SC2086
  set -- "$1" "$2" $cmd
  if [ "$1" = nginx ]; then set -- "$@" -g 'daemon off;'; fi
  "$tk" --signal "$sig" --port "127.0.0.1:$port" -- "${@:3}" 2>"$log" >/dev/null & tkpid=$!
  wait_serving "127.0.0.1:$port"
  local out=$work/$1.$2.out
  if [ "$2" = wrk ]; then
    wrk -t2 -c32 -d${duration}s "http://127.0.0.1:$port/" > "$out" 2>&1 &
  elif [ "$2" = hey ]; then
    hey -c 32 -z ${duration}s "http://127.0.0.1:$port/" > "$out" 2>&1 &
  else # hey-q5: clients with think time, 5 requests a second each
    hey -c 32 -q 5 -z ${duration}s "http://127.0.0.1:$port/" > "$out" 2>&1 &
  fi
  local load=$!
  for _ in $(seq $reloads); do sleep $every; kill -HUP "$tkpid"; done
  wait "$load"
  local done
  done=$(grep -c 'msg="took over" generation=[2-9]' "$log" || true)
  kill -TERM "$tkpid"; wait "$tkpid" || true; tkpid=
  local reqs errs
  if [ "$2" = wrk ]; then
    reqs=$(awk '/requests in/ {print $1}' "$out")
    errs=$(awk '/Socket errors/ {gsub(",","");s=0; for(i=3;i<=NF;i+=2) s+=$(i+1); print s}' "$out")
    local non2xx; non2xx=$(awk '/Non-2xx/ {print $NF}' "$out")
    errs=$(( ${errs:-0} + ${non2xx:-0} ))
    local kinds; kinds=$(awk '/Socket errors/ {sub(/.*errors: /,""); print}' "$out")
    echo "| $1 | wrk | $reqs | $errs${kinds:+ ($kinds)} | $done of $reloads | $(grep -c 'within --drain-timeout' "$log" || true) |"
  else
    reqs=$(grep -E '^\s+\[200\]' "$out" | awk '{print $2}')
    errs=$(awk '/Error distribution:/ {on=1; next} on && /\[/ {s+=$1} END {print s+0}' "$out")
    echo "| $1 | $2 | ${reqs:-0} | $errs | $done of $reloads | $(grep -c 'within --drain-timeout' "$log" || true) |"
  fi
  cp "$log" "/tmp/keepalive-last.$1.$2.log" 2>/dev/null || true
}

# own SERVER: the server alone, under wrk, reloaded its own way every 3 s
# (nginx: HUP to its master; gunicorn: HUP; puma: USR1, a phased restart),
# for the same table. Servers with no reload of their own are skipped.
own() {
  local sig
  case $1 in nginx) sig=HUP ;; gunicorn) sig=HUP ;; puma) sig=USR1 ;; *) return 0 ;; esac
  local port cmd
  port=$(free_port)
  cmd=$(argv "$1" "$port") || true
  [ -n "$cmd" ] || return 0
  # shellcheck disable=SC2086
  set -- "$1" $cmd
  if [ "$1" = nginx ]; then set -- "$@" -g 'daemon off;'; fi
  "${@:2}" >/dev/null 2>"$work/$1.own.log" & tkpid=$!
  wait_serving "127.0.0.1:$port"
  local out=$work/$1.own.out
  wrk -t2 -c32 -d${duration}s "http://127.0.0.1:$port/" > "$out" 2>&1 &
  local load=$!
  for _ in $(seq $reloads); do sleep $every; kill -"$sig" "$tkpid"; done
  wait "$load"
  kill -TERM "$tkpid"; wait "$tkpid" || true; tkpid=
  local reqs errs non2xx kinds
  reqs=$(awk '/requests in/ {print $1}' "$out")
  errs=$(awk '/Socket errors/ {gsub(",","");s=0; for(i=3;i<=NF;i+=2) s+=$(i+1); print s}' "$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$out")
  errs=$(( ${errs:-0} + ${non2xx:-0} ))
  kinds=$(awk '/Socket errors/ {sub(/.*errors: /,""); print}' "$out")
  echo "| $1 | wrk, its own reload (kill -$sig), no takeover | $reqs | $errs${kinds:+ ($kinds)} | $reloads sent | |"
}

echo "| server | client | requests | errors | reloads done | drains cut at --drain-timeout |"
echo "|---|---|---:|---:|---:|---:|"
for s in "${servers[@]}"; do
  for c in wrk hey hey-q5; do run "$s" "$c"; done
  own "$s"
done
