# A python HTTP server that drains on SIGTERM, as the design asks of a
# service: python3 server.py PORT [HOST]. (python3 -m http.server dies at
# once on SIGTERM, cutting requests in flight.)
import http.server, os, signal, sys, threading, time, urllib.parse

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        time.sleep(int(q.get("ms", ["0"])[0]) / 1000)
        body = f"pid={os.getpid()} python\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

class Server(http.server.ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True  # server_close() waits for requests in flight

host = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"
srv = Server((host, int(sys.argv[1])), Handler)
print(f"listening {host}:{sys.argv[1]}", flush=True)
# TERM is taken by sigwait in the main thread, never by a handler: a
# handler that starts a thread (to call shutdown) can run while the main
# thread holds one of threading's locks, and then both wait for ever. The
# mask is set before any thread starts, so every thread inherits it.
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
serving = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
serving.start()
signal.sigwait({signal.SIGTERM})
srv.shutdown()
serving.join()
srv.server_close()
