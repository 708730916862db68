#!/usr/bin/env python3
"""Deploys on a host what the takeover_app role has put in place, and waits
until takeover's --status-file says a new generation serves; exits 1 if the
swap failed (the new generation was rolled back or exited, the takeover
died) or did not finish in time. Prints one JSON line: {"changed": ..., ...}.

  takeover-deploy.py --status-file F [--new] [--changed] --start CMD...
      no takeover serves: start CMD (a takeover) detached, its output in
      --log; --new (a new takeover binary): start CMD all the same, and it
      replaces the one that serves; --changed (a new release): send HUP to
      the takeover that serves; else nothing. Then wait for the new
      generation to serve.
  takeover-deploy.py --status-file F --reload [--reload-cmd CMD]
      send HUP to the takeover that serves (or run CMD, such as systemctl
      reload takeover@app), and wait for its new generation
  takeover-deploy.py --status-file F --show
      print the status of the takeover that serves, {} if none does
"""
import argparse, json, os, shlex, signal, subprocess, sys, time

def read(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

def alive_takeover(pid):
    """pid is a running takeover (not a process that reused its pid)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return bool(argv) and os.path.basename(argv[0]).startswith(b"takeover")

def serving(path):
    st = read(path)
    if st and st.get("state") == "serving" and alive_takeover(st.get("takeover_pid", 0)):
        return st
    return None

def wait(a, before, pid, reload, alive):
    deadline = time.monotonic() + a.timeout
    while time.monotonic() < deadline:
        st = read(a.status_file) or {}
        if st.get("takeover_pid") == pid:
            if st.get("failed_reloads", 0) > before.get("failed_reloads", 0):
                why = (st.get("last_failed_reload") or {}).get("why", "")
                sys.exit(f"the new generation did not serve: {why}; generation {st.get('generation')} (pid {st.get('child_pid')}) serves on")
            if st.get("state") == "serving" and (not reload or st.get("generation") != before.get("generation")):
                return {"takeover_pid": pid, "generation": st.get("generation"), "child_pid": st.get("child_pid")}
        if not alive():
            sys.exit(f"takeover (pid {pid}) exited before its new generation served; see {a.log or 'its log'}")
        time.sleep(0.02)
    sys.exit(f"no new generation served within {a.timeout:g}s")

def main():
    p = argparse.ArgumentParser()
    p.add_argument("--status-file", required=True)
    p.add_argument("--timeout", type=float, default=120)
    p.add_argument("--log")
    p.add_argument("--new", action="store_true")
    p.add_argument("--changed", action="store_true")
    p.add_argument("--reload-cmd")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--reload", action="store_true")
    g.add_argument("--show", action="store_true")
    g.add_argument("--start", action="store_true", help="the rest of the arguments are the command")
    argv, start = sys.argv[1:], []
    if "--start" in argv:  # the rest is the command, -- and all
        i = argv.index("--start")
        argv, start = argv[:i + 1], argv[i + 1:]
    a = p.parse_args(argv)
    a.start = start

    st = serving(a.status_file)
    if a.show:
        print(json.dumps(st or {}))
        return
    if a.start and st and a.changed and not a.new:
        a.reload = True
    if a.reload:
        if not st:
            sys.exit(f"no takeover serves ({a.status_file})")
        if a.reload_cmd:
            subprocess.run(shlex.split(a.reload_cmd), check=True)
        else:
            os.kill(st["takeover_pid"], signal.SIGHUP)
        done = wait(a, st, st["takeover_pid"], True, lambda: alive_takeover(st["takeover_pid"]))
    else:
        if st and not a.new:
            print(json.dumps({"changed": False, **st}))
            return
        log = open(a.log or os.devnull, "ab")
        proc = subprocess.Popen(a.start, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        done = wait(a, st or {}, proc.pid, False, lambda: proc.poll() is None)
    print(json.dumps({"changed": True, **done}))

if __name__ == "__main__":
    main()
