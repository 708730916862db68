#!/usr/bin/env bash
# What the tests need beyond Go (scripts/deps.list): as root, installs what is
# missing with apt-get (no questions asked, no service started); otherwise,
# or with --list, lists what is missing and how to install it. Exits 0 when
# everything is there, 3 when something is still missing (the tests that
# need it skip, one line each). scripts/check.sh runs it first.
set -euo pipefail
cd "$(dirname "$0")/.."

list_only=false
case ${1-} in
  --list) list_only=true ;;
  "") ;;
  *) echo "usage: scripts/deps.sh [--list]" >&2; exit 2 ;;
esac

# Tools in /usr/sbin count as there for users whose PATH lacks it.
PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin

# has WHAT: a command on the PATH, an executable at an absolute path, or
# python3:MODULE, which some python3 here imports (a pyenv python does not
# see Debian's python3-* packages; the tests fall back to /usr/bin/python3).
has() {
  case $1 in
    python3:*)
      python3 -c "import ${1#python3:}" 2>/dev/null || /usr/bin/python3 -c "import ${1#python3:}" 2>/dev/null ;;
    /*) [ -x "$1" ] ;;
    *) command -v "$1" >/dev/null ;;
  esac
}

# missing: sets what (each missing thing and its package) and pkgs (the
# packages, each once).
missing() {
  what=() pkgs=()
  local w p
  while read -r w p _; do
    case $w in ''|'#'*) continue ;; esac
    has "$w" && continue
    what+=("$w ($p)")
    case " ${pkgs[*]} " in *" $p "*) ;; *) pkgs+=("$p") ;; esac
  done <scripts/deps.list
}

installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

missing
if [ ${#pkgs[@]} -gt 0 ] && ! $list_only && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "scripts/deps.sh: installing ${pkgs[*]}" >&2
  mymachines_before=false
  if installed libnss-mymachines; then mymachines_before=true; fi
  # Installed as tools, not started as system services: they would take
  # ports 80, 6379, 8080 and 11211 (nginx and caddy both 80). policy-rc.d
  # answering 101 tells invoke-rc.d and deb-systemd-invoke not to start them.
  policy=false
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    policy=true
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  status=0
  apt-get update </dev/null || status=$?
  if [ $status = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${pkgs[@]}" </dev/null || status=$?
  fi
  if $policy; then
    rm -f /usr/sbin/policy-rc.d
    trap - EXIT
  fi
  [ $status = 0 ] || echo "scripts/deps.sh: apt-get failed (exit status $status)" >&2
  # systemd-container may bring libnss-mymachines, which edits
  # /etc/nsswitch.conf; one that was there before is left alone.
  if ! $mymachines_before && installed libnss-mymachines; then
    DEBIAN_FRONTEND=noninteractive apt-get remove -y libnss-mymachines </dev/null
  fi
  missing
fi
if [ ${#pkgs[@]} -eq 0 ]; then
  exit 0
fi
{
  echo "scripts/deps.sh: not installed here; the tests that need them skip, saying so:"
  printf '  %s\n' "${what[@]}"
  echo "To have them (Debian, as root; no service is started): scripts/deps.sh"
  echo "  (apt-get install --no-install-recommends ${pkgs[*]})"
} >&2
exit 3
