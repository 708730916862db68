# A server that accepts in a blocking loop, as the simplest servers do (no
# settimeout, no select): python3 blocking_server.py ADDR [never], where
# ADDR is HOST:PORT or a unix socket's path. It prints "listening INODE",
# then answers each connection with "ok PID" and closes it. An accept(2)
# that fails (EAGAIN on a socket made non-blocking under it) ends it with
# status 1, as it ends such a server.
#
# With "never" it makes its socket non-blocking, binds and listens, prints
# "listening INODE" and never accepts: a new version that never becomes
# ready.
import os, socket, sys, time

addr = sys.argv[1]
never = len(sys.argv) > 2 and sys.argv[2] == "never"
if addr.startswith("/"):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    where = addr
else:
    host, port = addr.rsplit(":", 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    where = (host, int(port))
if never:
    s.setblocking(False)
s.bind(where)
s.listen(16)
print(f"listening {os.fstat(s.fileno()).st_ino}", flush=True)
if never:
    while True:
        time.sleep(3600)
while True:
    try:
        c, _ = s.accept()
    except OSError as e:
        print(f"accept failed: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    c.sendall(f"ok {os.getpid()}\n".encode())
    c.close()
