# python's ThreadingHTTPServer on the socket passed as systemd passes it
# (LISTEN_FDS=1: fd 3), listening again with the standard library's default
# backlog of 5; like python3 -m http.server it dies at once on SIGTERM,
# cutting the requests it has accepted.
import http.server, os, socket

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"pid={os.getpid()} python\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

if os.environ.get("LISTEN_FDS") != "1":
    raise SystemExit("want LISTEN_FDS=1")
srv = http.server.ThreadingHTTPServer(None, Handler, bind_and_activate=False)
srv.socket.close()
srv.socket = socket.socket(fileno=3)
srv.server_address = srv.socket.getsockname()
srv.server_activate()  # listen(5)
srv.serve_forever()
