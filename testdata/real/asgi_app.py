# A tiny ASGI app: python3 -m uvicorn --app-dir testdata/real asgi_app:app
# With TAKEOVER_TEST_HEALTHZ=STATUS in its environment, /healthz answers
# STATUS (a release that is unwell).
import os

HEALTHZ = int(os.environ.get("TAKEOVER_TEST_HEALTHZ", "200"))

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = f"pid={os.getpid()} uvicorn\n".encode()
    status = HEALTHZ if scope["path"] == "/healthz" else 200
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
