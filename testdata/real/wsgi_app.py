# A tiny WSGI app: gunicorn --chdir testdata/real wsgi_app:app
import os

def app(environ, start_response):
    body = f"pid={os.getpid()} gunicorn\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
