# One connection inside a pod whose writer falls back from redirect to TCP
# while its reader still has the redirected bytes unread; the reader then
# reads the way HAProxy (raw_sock_to_buf) and libuv do: edge-triggered, and
# a read shorter than asked while epoll reported RDHUP is the end of the
# stream. Driven by the test with SIGUSR1 at each step (see integrity.test.ts).
#   switch-reader.py PORT REDIRECTED_BYTES TCP_BYTES [STALL_SECONDS]
import json, select, signal, socket, sys, threading

port, first, second = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
# No event for this long after the last one: the reader is stalled.
stall = float(sys.argv[4]) if len(sys.argv) > 4 else 30
TRY = 16384
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])


def say(o):
    print(json.dumps(o), flush=True)


def step():
    signal.sigwait([signal.SIGUSR1])


def pattern(n):
    return bytes((i * 7 + 3) & 0xFF for i in range(n))


def pair(lsock):
    c = socket.socket()
    c.setblocking(False)
    c.connect_ex(("127.0.0.1", port))
    s, _ = lsock.accept()
    s.setblocking(False)
    select.select([], [c], [], 30)
    return c, s


def send_all(s, b):
    sent = 0
    while sent < len(b):
        select.select([], [s], [], 30)
        try:
            sent += s.send(b[sent:])
        except BlockingIOError:
            pass


lsock = socket.socket()
lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lsock.bind(("127.0.0.1", port))
lsock.listen(8)
# The datapath pairs an accepted socket once its listener was seen
# event-driven: a first connection on which the server writes.
c, s = pair(lsock)
send_all(s, b"x" * 100)
select.select([c], [], [], 30)
c.recv(1000)
c.close()
s.close()

reader, writer = pair(lsock)
data = pattern(first + second)
send_all(writer, data[:first])
say({"phase": "redirected"})
step()  # the test disabled the netns: the rest goes over TCP


def write_rest():
    # In its own thread: with the reader not reading yet, TCP may take only
    # part of it (a held-back segment is never acknowledged).
    send_all(writer, data[first:])
    writer.shutdown(socket.SHUT_WR)


sender = threading.Thread(target=write_rest)
sender.start()
say({"phase": "tcp-sending"})
step()  # TCP bytes (and maybe the FIN) reached the reader: held back, or queued

ep = select.epoll()
ep.register(reader.fileno(), select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLET)
got = b""
end = None
while end is None:
    events = ep.poll(stall)
    if not events:
        end = "stalled"
        break
    hup = bool(events[0][1] & (select.EPOLLRDHUP | select.EPOLLHUP))
    while True:
        try:
            d = reader.recv(TRY)
        except BlockingIOError:
            break
        if not d:
            end = "eof"
            break
        got += d
        if len(d) < TRY:
            if hup:
                end = "short read with rdhup"
            break
left = 0
reader.setblocking(False)
while True:
    try:
        d = reader.recv(1 << 20)
    except BlockingIOError:
        break
    if not d:
        break
    left += len(d)
sender.join()
say({"got": len(got), "want": len(data), "intact": got == data, "end": end, "unreadAtEnd": left})
