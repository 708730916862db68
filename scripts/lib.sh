# Sourced by bench.sh and stress.sh, which set tk to the takeover binary.

# ours PID: the process still runs and is one this script started: not a
# zombie that init has yet to reap, and running $tk or start_server. Pids
# wrap (at 32768 on this machine), so a pid recorded long ago may by now be
# someone else's, which must not be signalled.
ours() {
  local st cmd
  st=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "$st" != Z ] || return 1
  cmd=$( { tr '\0' ' ' < "/proc/$1/cmdline"; } 2>/dev/null) || return 1
  case $cmd in "$tk "*|*start_server*) return 0 ;; esac
  return 1
}
