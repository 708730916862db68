# An asyncio server, as uvicorn runs one: asyncio sets O_NONBLOCK on the
# listening socket itself, after bind(2). python3 asyncio_server.py PORT.
# It drains on SIGTERM: stops accepting, answers what it has, exits.
import asyncio, os, signal, sys, time

async def handle(reader, writer):
    while (await reader.readline()) not in (b"\r\n", b""):
        pass
    body = f"pid={os.getpid():07d} asyncio\n".encode()
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    await writer.drain()
    writer.close()
    await writer.wait_closed()

async def main():
    srv = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print(f"listening 127.0.0.1:{sys.argv[1]}", flush=True)
    await stop.wait()
    srv.close()
    # Python 3.11's wait_closed() waits neither for the handlers nor for
    # connections accepted whose handler has not started (asyncio.run would
    # cancel them, resetting the client): wait until no other task is left.
    deadline = time.monotonic() + 10
    while len(asyncio.all_tasks()) > 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)

asyncio.run(main())
