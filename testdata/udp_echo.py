# A python UDP echo server: python3 udp_echo.py PORT [HOST]. On SIGTERM it
# stops reading, and answers every datagram it has read before it exits.
import select, signal, socket, sys

host = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((host, int(sys.argv[1])))
stop = False

def on_term(*_):
    global stop
    stop = True

signal.signal(signal.SIGTERM, on_term)
print(f"listening {host}:{sys.argv[1]} udp", flush=True)
while not stop:
    if not select.select([sock], [], [], 0.05)[0]:
        continue
    try:
        # MSG_DONTWAIT: the new server, sharing the socket, may have
        # taken the datagram since select.
        data, peer = sock.recvfrom(2048, socket.MSG_DONTWAIT)
    except BlockingIOError:
        continue
    sock.sendto(data, peer)
