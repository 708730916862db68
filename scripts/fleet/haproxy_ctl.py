#!/usr/bin/env python3
"""HAProxy's runtime API for the fleet simulation's drain dance (the naive
rolling deploy):

  haproxy_ctl.py SOCK drain SERVER   stop sending it new connections, wait until it has none
  haproxy_ctl.py SOCK ready SERVER   send it connections again once its health check passes
  haproxy_ctl.py SOCK up             wait until every server's health check passes

Each wait is bounded (30 s) and exits 1 when it runs out.
"""
import socket, sys, time

BACKEND = "app"

def ask(sock, cmd):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    s.sendall(cmd.encode() + b"\n")
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    s.close()
    return out.decode()

def servers(sock):
    """name -> (status, current sessions) of the backend's servers."""
    lines = ask(sock, "show stat").splitlines()
    head = lines[0].lstrip("# ").split(",")
    out = {}
    for line in lines[1:]:
        row = dict(zip(head, line.split(",")))
        if row.get("pxname") == BACKEND and row.get("svname") not in ("BACKEND", "FRONTEND"):
            out[row["svname"]] = (row["status"], int(row["scur"] or 0))
    return out

def wait(cond, what):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if cond():
            return 0
        time.sleep(0.05)
    print(f"haproxy: {what} after 30s: {servers(SOCK)}", file=sys.stderr)
    return 1

SOCK = sys.argv[1]
op = sys.argv[2]
if op == "drain":
    name = sys.argv[3]
    ask(SOCK, f"set server {BACKEND}/{name} state drain")
    sys.exit(wait(lambda: servers(SOCK)[name][1] == 0, f"{name} still has connections"))
if op == "ready":
    name = sys.argv[3]
    ask(SOCK, f"set server {BACKEND}/{name} state ready")
    sys.exit(wait(lambda: servers(SOCK)[name][0] == "UP", f"{name} is not up"))
if op == "up":
    sys.exit(wait(lambda: all(st == "UP" for st, _ in servers(SOCK).values()), "not every server is up"))
print(__doc__, file=sys.stderr)
sys.exit(2)
