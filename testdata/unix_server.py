# A python HTTP/1.0 server on a unix socket that does what servers do to
# their path: it unlinks it before its bind (a stale file from a crash
# would make the bind fail) and again on its way out. It drains on
# SIGTERM: python3 unix_server.py PATH [FAILFILE]. On SIGUSR1 (a crash),
# and 0.3 s after its listen, before it accepts, when FAILFILE exists (a
# broken deploy), it fails as servers do: it unlinks its path and exits 1.
import os, signal, socketserver, sys, threading, time

path = sys.argv[1]
failfile = sys.argv[2] if len(sys.argv) > 2 else None

def fail(*_):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    os._exit(1)

class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass
        body = f"pid={os.getpid()} python-unix\n".encode()
        self.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = False
    block_on_close = True  # server_close() waits for requests in flight

try:
    os.unlink(path)
except FileNotFoundError:
    pass
srv = Server(path, Handler)
if failfile and os.path.exists(failfile):
    time.sleep(0.3)  # bound and listening, never accepting
    fail()
print(f"listening {path}", flush=True)
# The signals are taken by sigwait in the main thread, never by a handler:
# a handler that starts a thread (to call shutdown) can run while the main
# thread holds one of threading's locks, and then both wait for ever. The
# mask is set before any thread starts, so every thread inherits it.
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGUSR1})
serving = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
serving.start()
if signal.sigwait({signal.SIGTERM, signal.SIGUSR1}) == signal.SIGUSR1:
    fail()
srv.shutdown()
serving.join()
srv.server_close()
try:
    os.unlink(path)
except FileNotFoundError:
    pass
