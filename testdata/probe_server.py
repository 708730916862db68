# A server that tests its port before it binds it, as port finders do
# (python3 probe_server.py PORT [listen]): a probe socket binds the port
# (listening too, with "listen") and is closed; then the real server binds
# the port and serves HTTP until SIGTERM.
import http.server, os, signal, socket, sys

port = int(sys.argv[1])
probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
probe.bind(("127.0.0.1", port))  # no SO_REUSEADDR: as a port finder does
if len(sys.argv) > 2 and sys.argv[2] == "listen":
    probe.listen(1)
probe.close()

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"pid={os.getpid()} probed\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

srv = http.server.HTTPServer(("127.0.0.1", port), Handler)
print(f"listening 127.0.0.1:{port}", flush=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
srv.serve_forever()
