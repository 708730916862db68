# A tiny ASGI app: python3 -m uvicorn --app-dir testdata/real asgi_app:app
import os

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = f"pid={os.getpid()} uvicorn\n".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
