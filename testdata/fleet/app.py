# The application of the fleet simulation (scripts/fleet.sh): python3 app.py
# PORT [HOST]. It takes half a second to start (the init a deploy waits
# for), answers with the release it runs (the VERSION file beside it) and
# its host, and drains on SIGTERM. A release whose VERSION says "broken"
# never binds: a deploy of it must be rolled back.
import http.server, os, signal, socket, sys, threading, time

here = os.path.dirname(os.path.abspath(__file__))
version = open(os.path.join(here, "VERSION")).read().strip()
time.sleep(0.5)
if version == "broken":
    time.sleep(3600)

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"version={version} host={socket.gethostname()} pid={os.getpid()}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

class Server(http.server.ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True  # server_close() waits for requests in flight
    allow_reuse_address = True

host = sys.argv[2] if len(sys.argv) > 2 else "0.0.0.0"
# TERM by sigwait in the main thread (see testdata/server.py for why).
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
srv = Server((host, int(sys.argv[1])), Handler)
serving = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
serving.start()
signal.sigwait({signal.SIGTERM})
srv.shutdown()
serving.join()
srv.server_close()
