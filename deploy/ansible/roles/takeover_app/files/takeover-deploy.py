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

With --takeover BIN (takeover's binary, also in the --start command), the
waiting is takeover's own: `takeover deploy` starts the new takeover and
`takeover reload --pid` sends the HUP, each waiting for the outcome and
saying why it failed; without it, this script sends the HUP or starts the
takeover and polls the status file.
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

def takeover(a, prefix, verb, args):
    """Runs `takeover VERB --json ...` (prefix: env and the binary) and
    returns its outcome; exits with its message if it failed."""
    cmd = prefix + [verb, "--json", "--timeout", f"{a.timeout:g}s"] + args
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    try:
        out = json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        out = {"why": (p.stderr or p.stdout).strip()}
    if p.returncode != 0 or not out.get("ok"):
        sys.exit(f"takeover {verb} failed (exit {p.returncode}): {out.get('why', '')}")
    return {"takeover_pid": out["takeover_pid"], "generation": out["generation"], "child_pid": out["child_pid"]}

def main():
    p = argparse.ArgumentParser()
    p.add_argument("--status-file", required=True)
    p.add_argument("--timeout", type=float, default=120)
    p.add_argument("--log")
    p.add_argument("--new", action="store_true")
    p.add_argument("--changed", action="store_true")
    p.add_argument("--reload-cmd")
    p.add_argument("--takeover", help="takeover's binary: let takeover deploy and takeover reload wait")
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
    # prefix runs takeover as --start does (env VAR=... BIN), for its run directory.
    prefix = a.start[:a.start.index(a.takeover) + 1] if a.takeover in a.start else [a.takeover]
    if a.reload:
        if not st:
            sys.exit(f"no takeover serves ({a.status_file})")
        if a.reload_cmd:
            r = subprocess.run(shlex.split(a.reload_cmd))
            if r.returncode != 0:  # ExecReload=takeover reload says why in the journal
                sys.exit(f"{a.reload_cmd} failed (exit {r.returncode}): the new generation did not serve; see the journal")
        elif a.takeover:
            print(json.dumps({"changed": True, **takeover(a, prefix, "reload", ["--pid", str(st["takeover_pid"])])}))
            return
        else:
            os.kill(st["takeover_pid"], signal.SIGHUP)
        done = wait(a, st, st["takeover_pid"], True, lambda: alive_takeover(st["takeover_pid"]))
    else:
        if st and not a.new:
            print(json.dumps({"changed": False, **st}))
            return
        if a.takeover in a.start:
            i = a.start.index(a.takeover) + 1
            print(json.dumps({"changed": True, **takeover(a, prefix, "deploy", ["--log", a.log or os.devnull] + a.start[i:])}))
            return
        log = open(a.log or os.devnull, "ab")
        proc = subprocess.Popen(a.start, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        done = wait(a, st or {}, proc.pid, False, lambda: proc.poll() is None)
    print(json.dumps({"changed": True, **done}))

if __name__ == "__main__":
    main()
