#!/usr/bin/env bash
# The fleet simulation: --hosts hosts in network namespaces on this machine,
# each with its own sshd on its own address (10.231.N.2), HAProxy in front on
# loopback (1 s health checks, retries 3, redispatch), HTTP load through
# HAProxy (takeover probe, --workers clients), and ansible-playbook
# deploying a new release (testdata/fleet/app.py: half a second to start)
# to them over SSH, four ways, side by side:
#
#   naive, all at once     stop the old app, start the new one, every host at once
#   naive, rolling         host by host (serial 1), each drained from HAProxy first
#                          and put back once its health check passes
#   takeover, all at once  deploy/ansible's role and playbook (serial 100%)
#   takeover, rolling      the same, serial 1
#
# Then the role twice more: a second run with no change (it must change
# nothing), and a broken release (its new generation never serves: the play
# must fail and the old release serve on).
#
#   scripts/fleet.sh [--hosts N] [--workers N] [--pause D] [--json FILE]
#
# --pause (20ms) is each client's wait between requests: the load leaves the
# two cores some time for ansible, or a deploy would take minutes.
#
# Prints a Markdown table; --json writes the figures too. Needs root, ip
# (iproute2), sshd (openssh-server), haproxy, ansible-playbook (ansible-core),
# python3 and go. Traffic goes to loopback and the namespaces' own addresses
# only; everything made (namespaces, veths, processes, the temp dir) is
# removed at the end, on failure too.
set -euo pipefail
cd "$(dirname "$0")/.."

hosts=3 workers=4 pause=20ms json=
usage="usage: scripts/fleet.sh [--hosts N] [--workers N] [--pause D] [--json FILE]"
while [ $# -gt 0 ]; do
  case $1 in
    --hosts) hosts=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --pause) pause=$2; shift 2 ;;
    --json) json=$2; shift 2 ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
case $hosts in ''|*[!0-9]*) echo "--hosts $hosts: want a number from 1 to 20" >&2; exit 2 ;; esac
if [ "$hosts" -lt 1 ] || [ "$hosts" -gt 20 ]; then echo "--hosts $hosts: want a number from 1 to 20" >&2; exit 2; fi
case $workers in ''|*[!0-9]*) echo "--workers $workers: want a number from 1 to 64" >&2; exit 2 ;; esac
if [ "$workers" -lt 1 ] || [ "$workers" -gt 64 ]; then echo "--workers $workers: want a number from 1 to 64" >&2; exit 2; fi
[ "$(id -u)" = 0 ] || { echo "scripts/fleet.sh needs root (network namespaces)" >&2; exit 2; }
for tool in ip haproxy ansible-playbook python3 go ssh ssh-keygen; do
  command -v "$tool" >/dev/null || { echo "scripts/fleet.sh needs $tool (scripts/deps.sh installs it)" >&2; exit 2; }
done
[ -x /usr/sbin/sshd ] || { echo "scripts/fleet.sh needs /usr/sbin/sshd (openssh-server)" >&2; exit 2; }
if ip -4 addr show | grep -q ' 10\.231\.'; then
  echo "10.231.0.0/16 is in use here (another fleet.sh?); the simulation's hosts live there" >&2
  exit 2
fi

tmp=$(mktemp -d /tmp/takeover-fleet.XXXXXX)
tag=$(basename "$tmp" | sed 's/.*\.//' | tr -dc 'a-zA-Z0-9' | head -c 5)
nss=() bg=()
cleanup() {
  set +e
  for i in $(seq 1 "$hosts"); do # ssh's control masters
    [ -S "$tmp/cp/$i" ] && ssh -o ControlPath="$tmp/cp/$i" -O exit "root@10.231.$i.2" 2>/dev/null
  done
  # Every process in the namespaces is the simulation's: sshd, and what
  # it started (takeover, the apps).
  for ns in "${nss[@]}"; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
  done
  for pid in "${bg[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  wait 2>/dev/null
  for ns in "${nss[@]}"; do ip netns del "$ns" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "building takeover" >&2
CGO_ENABLED=0 go build -o "$tmp/takeover" .
bin=$tmp/takeover

# Keys: the control machine's, and one host key for every sshd.
ssh-keygen -q -t ed25519 -N '' -f "$tmp/id"
ssh-keygen -q -t ed25519 -N '' -f "$tmp/hostkey"
cp "$tmp/id.pub" "$tmp/authorized_keys"
mkdir -p /run/sshd "$tmp/cp" "$tmp/ansible-local"
cat >"$tmp/sshd_config" <<EOF
HostKey $tmp/hostkey
AuthorizedKeysFile $tmp/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile none
MaxStartups 100
MaxSessions 100
Subsystem sftp internal-sftp
EOF

echo "starting $hosts hosts" >&2
for i in $(seq 1 "$hosts"); do
  ns=tkf-$tag-$i
  ip netns add "$ns"
  nss+=("$ns")
  ip link add "tkf$tag${i}a" type veth peer name "tkf$tag${i}b"
  ip link set "tkf$tag${i}b" netns "$ns"
  ip addr add "10.231.$i.1/24" dev "tkf$tag${i}a"
  ip link set "tkf$tag${i}a" up
  ip netns exec "$ns" ip addr add "10.231.$i.2/24" dev "tkf$tag${i}b"
  ip netns exec "$ns" ip link set "tkf$tag${i}b" up
  ip netns exec "$ns" ip link set lo up
  mkdir -p "$tmp/h$i"
  ip netns exec "$ns" /usr/sbin/sshd -D -e -f "$tmp/sshd_config" -o "ListenAddress=10.231.$i.2" >"$tmp/h$i/sshd.log" 2>&1 &
done
for i in $(seq 1 "$hosts"); do
  for try in $(seq 1 100); do
    (exec 3<>"/dev/tcp/10.231.$i.2/22") 2>/dev/null && break
    [ "$try" = 100 ] && { echo "host $i's sshd does not listen:" >&2; cat "$tmp/h$i/sshd.log" >&2; exit 1; }
    sleep 0.05
  done
done

# Releases: v1, v2, and a broken one.
for v in v1 v2 broken; do
  mkdir -p "$tmp/release-$v"
  cp testdata/fleet/app.py "$tmp/release-$v/"
  echo "$v" >"$tmp/release-$v/VERSION"
done

hport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
{
  echo "[app]"
  for i in $(seq 1 "$hosts"); do
    echo "h$i ansible_host=10.231.$i.2 ansible_ssh_common_args='-o ControlMaster=auto -o ControlPersist=120s -o ControlPath=$tmp/cp/$i' takeover_app_root=$tmp/h$i/app takeover_run_dir=$tmp/h$i/run takeover_binary_path=$tmp/h$i/bin/takeover takeover_environment='{\"TAKEOVER_RUN_DIR\": \"$tmp/h$i/state\"}'"
  done
  cat <<EOF
[app:vars]
ansible_user=root
ansible_ssh_private_key_file=$tmp/id
ansible_python_interpreter=/usr/bin/python3
ansible_remote_tmp=$tmp/remote-tmp
takeover_binary_src=$bin
takeover_service_manager=none
takeover_ready_timeout=6s
takeover_kill_timeout=3s
takeover_flags=["--bind-timeout=4s"]
takeover_ports=[8100]
takeover_command=/usr/bin/python3 {{ takeover_app_root }}/current/app.py 8100
fleet_dir=$PWD/scripts/fleet
fleet_haproxy_sock=$tmp/haproxy.sock
EOF
} >"$tmp/inventory.ini"
cat >"$tmp/ansible.cfg" <<EOF
[defaults]
inventory = $tmp/inventory.ini
roles_path = $PWD/deploy/ansible/roles
local_tmp = $tmp/ansible-local
host_key_checking = False
forks = 25
retry_files_enabled = False
[ssh_connection]
pipelining = True
ssh_args = -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no -o LogLevel=ERROR
EOF
export ANSIBLE_CONFIG=$tmp/ansible.cfg

{
  cat <<EOF
global
  stats socket $tmp/haproxy.sock level admin
  maxconn 4096
defaults
  mode http
  timeout connect 1s
  timeout client 10s
  timeout server 10s
  retries 3
  option redispatch
frontend fleet
  bind 127.0.0.1:$hport
  default_backend app
backend app
  balance roundrobin
  option httpchk GET /
EOF
  for i in $(seq 1 "$hosts"); do
    echo "  server h$i 10.231.$i.2:8100 check inter 1s fall 2 rise 1"
  done
} >"$tmp/haproxy.cfg"
haproxy -db -f "$tmp/haproxy.cfg" >"$tmp/haproxy.log" 2>&1 &
bg+=($!)

# play LOG PLAYBOOK ARGS...: ansible-playbook, its output kept in LOG.
play() {
  local log=$1 book=$2
  shift 2
  ansible-playbook "$book" "$@" >"$log" 2>&1
}

# logs: every host's takeover and app logs, for a failure.
logs() {
  for i in $(seq 1 "$hosts"); do
    for f in "$tmp/h$i/run/takeover.log" "$tmp/h$i/run/app.log"; do
      [ -s "$f" ] && { echo "--- h$i: $f"; tail -20 "$f"; }
    done
  done >&2
}

# stop_fleet: every host's app stopped, its files removed (a fresh start).
stop_fleet() {
  for i in $(seq 1 "$hosts"); do
    for f in "$tmp/h$i/run/takeover.pid" "$tmp/h$i/run/app.pid"; do
      pid=$(cat "$f" 2>/dev/null) || continue
      if grep -qa -e takeover -e app.py "/proc/$pid/cmdline" 2>/dev/null; then
        kill -TERM "$pid"
        for try in $(seq 1 500); do [ -e "/proc/$pid" ] || break; sleep 0.02; done
      fi
    done
    rm -rf "$tmp/h$i/app" "$tmp/h$i/run" "$tmp/h$i/state"
  done
}

# versions: the release each of 30 requests through HAProxy got, counted.
versions() {
  python3 - "$hport" <<'EOF'
import collections, sys, urllib.request
seen = collections.Counter()
for _ in range(30):
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/", timeout=5).read().decode()
        seen[body.split()[0].split("=")[1]] += 1
    except Exception as e:
        seen["error"] += 1
print(" ".join(f"{k}:{v}" for k, v in sorted(seen.items())))
EOF
}

results=$tmp/results.jsonl
: >"$results"
# scenario NAME PLAYBOOK FROM VERSION ARGS...: a fresh fleet on release
# FROM (- leaves the fleet as it is), then the load, and the deploy of
# VERSION, measured; one line of results.
scenario() {
  local name=$1 book=$2 from=$3 version=$4
  shift 4
  if [ "$from" != - ]; then
    stop_fleet
    play "$tmp/setup.log" "$book" -e takeover_app_version="$from" -e takeover_app_src="$tmp/release-$from/" "$@" ||
      { echo "$name: the first deploy of $from failed:" >&2; cat "$tmp/setup.log" >&2; logs; exit 1; }
    python3 scripts/fleet/haproxy_ctl.py "$tmp/haproxy.sock" up ||
      { echo "$name: the fleet is not up in HAProxy after the first deploy" >&2; exit 1; }
  fi
  "$bin" probe --addr "127.0.0.1:$hport" --workers "$workers" --pause "$pause" --duration 10m >"$tmp/probe.json" &
  local probe=$!
  sleep 1
  local t0 t1 status=0
  t0=$(date +%s.%N)
  play "$tmp/deploy.log" "$book" -e takeover_app_version="$version" -e takeover_app_src="$tmp/release-$version/" "$@" || status=$?
  t1=$(date +%s.%N)
  echo "  deployed in $(python3 -c "print(round($t1 - $t0, 1))") s (play exit $status)" >&2
  sleep 1
  kill -TERM "$probe"
  wait "$probe" || true
  local served
  served=$(versions)
  python3 - "$name" "$t0" "$t1" "$status" "$served" "$tmp/probe.json" "$tmp/deploy.log" >>"$results" <<'EOF'
import json, sys
name, t0, t1, status, served, probe, log = sys.argv[1:]
p = json.load(open(probe))
text = open(log).read()
print(json.dumps({"scenario": name, "deploy_s": round(float(t1) - float(t0), 2), "play_status": int(status),
                  "requests": p["requests"], "failed": p["failed"], "refused": p["refused"],
                  "p99_ms": p["p99_ms"], "max_ms": p["max_ms"], "served_after": served,
                  "changed_nothing": "changed=0" in text and "changed=1" not in text and all(
                      "changed=0" in l for l in text.splitlines() if " ok=" in l)}))
EOF
  if [ "$status" != 0 ] && [ "$version" != broken ]; then
    echo "$name: the deploy failed:" >&2
    cat "$tmp/deploy.log" >&2
    logs
    exit 1
  fi
  cp "$tmp/deploy.log" "$tmp/deploy-$(echo "$name" | tr -c 'a-z0-9' '-').log"
}

echo "naive, all at once" >&2
scenario "naive, all at once" scripts/fleet/naive.yml v1 v2
echo "naive, rolling" >&2
scenario "naive, rolling" scripts/fleet/naive.yml v1 v2 -e fleet_serial=1 -e fleet_drain=true
echo "takeover, all at once" >&2
scenario "takeover, all at once" deploy/ansible/deploy.yml v1 v2
echo "takeover, rolling" >&2
scenario "takeover, rolling" deploy/ansible/deploy.yml v1 v2 -e takeover_serial=1
echo "takeover, the same release again" >&2
scenario "takeover, no change" deploy/ansible/deploy.yml - v2
echo "takeover, a broken release" >&2
scenario "takeover, broken release" deploy/ansible/deploy.yml - broken
sed 's/^/    /' "$tmp/deploy.log" | grep -E 'fatal|did not serve|FAILED' | head -5 >&2 || true

python3 - "$results" "$hosts" "$workers" "$tag" "$tmp" "${json:-}" <<'EOF'
import json, sys
path, hosts, workers, tag, tmp, out = sys.argv[1:]
rows = [json.loads(l) for l in open(path)]
print(f"{hosts} hosts, HAProxy in front (1 s health checks, retries 3, redispatch), {workers} HTTP clients; a release that takes 0.5 s to start:")
print()
print("| deploy | time | requests | failed | refused | p99 | max latency | play | served after |")
print("|---|---:|---:|---:|---:|---:|---:|---|---|")
for r in rows:
    play = "ok" if r["play_status"] == 0 else f"failed ({r['play_status']})"
    if r["scenario"] == "takeover, no change":
        play += ", changed nothing" if r["changed_nothing"] else ", CHANGED SOMETHING"
    print(f"| {r['scenario']} | {r['deploy_s']:.1f} s | {r['requests']} | {r['failed']} | {r['refused']} | {r['p99_ms']:.1f} ms | {r['max_ms']:.0f} ms | {play} | {r['served_after']} |")
if out:
    json.dump({"hosts": int(hosts), "workers": int(workers), "tag": tag, "tmp": tmp, "rows": rows}, open(out, "w"), indent=1)
EOF
