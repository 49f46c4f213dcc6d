#!/usr/bin/env python3
"""Socket-semantics cases for the real-kernel tests, run inside one pod.

Each case opens a listener on 127.0.0.1, connects to it from the same
process, does one thing and prints what the application observed as one
JSON object. The test runs every case on an accelerated pod and on a plain
one and asserts the observations are equal. Python because these calls
(MSG_PEEK, FIONREAD, epoll, sendfile, TCP Fast Open, TCP_DEFER_ACCEPT,
SO_LINGER) are not reachable from Node.

Every socket has a timeout, which in Python means a non-blocking file
waited on with poll(): the event-driven style sidecar-accel accelerates.
(Blocking sockets are never paired; test/kernel/matrix.test.ts covers them.)
Each listener first serves one probe connection, so the datapath learns that
its accepted sockets are read non-blocking (I6 in bpf/sidecar_accel.bpf.c).

usage: sockcases.py CASE [PORT]
"""
import errno
import fcntl
import hashlib
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import tempfile
import termios
import threading
import time

HOST = "127.0.0.1"
TIMEOUT = 10.0
socket.setdefaulttimeout(TIMEOUT)  # every socket, accepted ones too, is non-blocking


def listener(port, opts=()):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    for level, name, value in opts:
        s.setsockopt(level, name, value)
    s.bind((HOST, port))
    s.listen(16)
    probe(s, s.getsockname()[1])
    return s


def probe(lst, port):
    """One exchange on a fresh listener: its accepted socket sends, in the style all of them use."""
    c = socket.create_connection((HOST, port))
    c.sendall(b"?")  # first, for TCP_DEFER_ACCEPT listeners
    s, _ = lst.accept()
    s.recv(1)
    s.sendall(b"!")
    c.recv(1)
    c.close()
    s.close()


def pair(port, opts=()):
    """A connected (client, server) pair over loopback."""
    lst = listener(port, opts)
    c = socket.create_connection((HOST, port))
    s, _ = lst.accept()
    lst.close()
    return c, s


def exchanged_pair(port):
    """A pair that has sent one byte client -> server: paired already when
    accelerated, before a case sets the option it is about."""
    c, s = pair(port)
    c.sendall(b"a")
    recv_exact(s, 1)
    return c, s


def wait_readable(sock, timeout=5.0):
    r, _, _ = select.select([sock], [], [], timeout)
    return bool(r)


def recv_exact(sock, n, timeout=10.0):
    buf = b""
    sock.settimeout(timeout)
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    sock.settimeout(TIMEOUT)
    return buf


def recv_all(sock, timeout=10.0):
    buf = b""
    sock.settimeout(timeout)
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            return buf
        buf += chunk


def outcome(fn):
    """What a call returned, or the name of the error it raised."""
    try:
        r = fn()
        return {"ok": r.hex() if isinstance(r, bytes) else r}
    except OSError as e:
        return {"err": errno.errorcode.get(e.errno, str(e.errno))}


def fionread(sock):
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]


def case_peek(port):
    c, s = pair(port)
    c.sendall(b"hello world")
    wait_readable(s)
    peek1 = s.recv(5, socket.MSG_PEEK)
    peek2 = s.recv(64, socket.MSG_PEEK)
    data = recv_exact(s, 11)
    return {"peek1": peek1.decode(), "peek2Prefix": peek2[:5].decode(), "read": data.decode()}


def case_rcvlowat(port):
    """SO_RCVLOWAT raised after a first exchange: the reader is readable (poll,
    epoll) only once that many bytes are queued; lowered again, at once."""
    c, s = pair(port)
    c.sendall(b"a" * 10)
    first = recv_exact(s, 10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1000)
    c.sendall(b"x" * 100)
    ep = select.epoll()
    ep.register(s.fileno(), select.EPOLLIN)
    below = [wait_readable(s, 0.3), len(ep.poll(0.3))]
    c.sendall(b"y" * 1000)
    at = [wait_readable(s), len(ep.poll(5.0))]
    marked = recv_exact(s, 1100)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
    c.sendall(b"z" * 10)
    lowered = [wait_readable(s), len(ep.poll(5.0))]
    last = recv_exact(s, 10)
    return {"first": len(first), "readableBelowMark": below, "readableAtMark": at, "readAtMark": len(marked),
            "readableLowered": lowered, "readLowered": len(last)}


def case_inq(port):
    """TCP_INQ on the reader: each recvmsg() says in a cmsg how many bytes are left queued."""
    tcp_inq = 36
    c, s = exchanged_pair(port)
    s.setsockopt(socket.IPPROTO_TCP, tcp_inq, 1)
    c.sendall(b"x" * 1000)
    wait_readable(s)
    out = []
    for n in (300, 700):
        data, anc, _flags, _addr = s.recvmsg(n, socket.CMSG_SPACE(4))
        inq = [struct.unpack("i", d[:4])[0] for (lvl, typ, d) in anc if lvl == socket.IPPROTO_TCP and typ == tcp_inq]
        out.append([len(data), inq])
    return {"reads": out}


def case_rxtstamp(port):
    """SO_TIMESTAMP on the reader: each recvmsg() carries the receive time in a cmsg."""
    so_timestamp = 29
    c, s = exchanged_pair(port)
    s.setsockopt(socket.SOL_SOCKET, so_timestamp, 1)
    # The option turns the machine's receive stamps on through a static key,
    # switched by a work item: bytes that arrive before it ran carry no stamp,
    # over plain TCP too. One byte at a time until one comes stamped (no event
    # tells when the work item ran), then the measured message.
    warmed = False
    for _ in range(200):
        c.sendall(b"w")
        wait_readable(s)
        _data, anc, _flags, _addr = s.recvmsg(1, 256)
        if anc:
            warmed = True
            break
        time.sleep(0.05)
    c.sendall(b"x" * 100)
    wait_readable(s)
    data, anc, _flags, _addr = s.recvmsg(100, 256)
    return {"warmed": warmed, "read": len(data), "cmsgs": sorted([lvl, typ] for (lvl, typ, _d) in anc)}


def case_zerocopy(port):
    """MSG_ZEROCOPY from a writer that turned SO_ZEROCOPY on after a first
    exchange: its completion arrives on the error queue."""
    so_zerocopy, msg_zerocopy = 60, 0x4000000
    c, s = exchanged_pair(port)
    c.setsockopt(socket.SOL_SOCKET, so_zerocopy, 1)
    sent = c.send(b"z" * 20000, msg_zerocopy)
    got = recv_exact(s, sent)
    p = select.poll()
    p.register(c.fileno(), select.POLLERR)
    completed = bool(p.poll(5000))
    ee = None
    if completed:
        _data, anc, _flags, _addr = c.recvmsg(0, 256, socket.MSG_ERRQUEUE)
        ee = [struct.unpack("=IBBBBII", d[:16])[1:3] for (_l, _t, d) in anc]
    return {"sent": sent, "read": len(got), "completed": completed, "origin_type": ee}


def case_trunc(port):
    """recv(MSG_TRUNC) on TCP discards what it would read and returns its length."""
    c, s = pair(port)
    c.sendall(b"a" * 100 + b"b" * 50)
    wait_readable(s)
    try:
        dropped = s.recv(100, socket.MSG_TRUNC)
        dropped = len(dropped)
    except OSError as e:
        dropped = errno.errorcode.get(e.errno, str(e.errno))
    rest = recv_exact(s, 50)
    return {"dropped": dropped, "rest": rest.decode()}


def case_oob(port):
    """One urgent byte (MSG_OOB) between two ordinary sends."""
    c, s = pair(port)
    c.sendall(b"before")
    c.send(b"!", socket.MSG_OOB)
    c.sendall(b"after")
    got = recv_exact(s, 6)
    try:
        urgent = s.recv(1, socket.MSG_OOB).decode()
    except OSError as e:
        urgent = errno.errorcode.get(e.errno, str(e.errno))
    s.settimeout(2.0)
    rest = b""
    try:
        while len(rest) < 5:
            chunk = s.recv(64)
            if not chunk:
                break
            rest += chunk
    except (TimeoutError, socket.timeout):
        pass
    return {"first": got.decode(), "urgent": urgent, "rest": rest.decode()}


def case_peekoff(port):
    """SO_PEEK_OFF on the reader: each MSG_PEEK starts where the last one ended."""
    so_peek_off = 42
    c, s = exchanged_pair(port)
    try:
        s.setsockopt(socket.SOL_SOCKET, so_peek_off, 0)
        supported = True
    except OSError as e:
        supported = errno.errorcode.get(e.errno, str(e.errno))
    c.sendall(b"hello world")
    wait_readable(s)
    peeks = [s.recv(5, socket.MSG_PEEK).decode(), s.recv(6, socket.MSG_PEEK).decode()]
    return {"supported": supported, "peeks": peeks, "read": recv_exact(s, 11).decode()}


def case_txtstamp(port):
    """SO_TIMESTAMPING with software transmit stamps on the writer: each send's stamp arrives on its error queue."""
    so_timestamping = 37
    tx_software, software, opt_id, opt_tsonly = 1 << 1, 1 << 4, 1 << 7, 1 << 11
    c, s = exchanged_pair(port)
    c.setsockopt(socket.SOL_SOCKET, so_timestamping, tx_software | software | opt_id | opt_tsonly)
    c.sendall(b"x" * 100)
    got = recv_exact(s, 100)
    p = select.poll()
    p.register(c.fileno(), select.POLLERR)
    stamped = bool(p.poll(5000))
    kinds = []
    if stamped:
        _data, anc, _flags, _addr = c.recvmsg(0, 512, socket.MSG_ERRQUEUE)
        kinds = sorted([lvl, typ] for (lvl, typ, _d) in anc)
    return {"read": len(got), "stamped": stamped, "cmsgs": kinds}


def case_fionread(port):
    c, s = pair(port)
    before = fionread(s)
    c.sendall(b"x" * 1000)
    wait_readable(s)
    after_send = fionread(s)
    part = recv_exact(s, 400)
    after_read = fionread(s)
    rest = recv_exact(s, 600)
    return {"before": before, "afterSend": after_send, "afterPartialRead": after_read,
            "read": len(part) + len(rest)}


def case_epoll(port):
    c, s = pair(port)
    ep = select.epoll()
    ep.register(s.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
    idle = ep.poll(0)
    c.sendall(b"ping")
    ready = ep.poll(5)
    data = recv_exact(s, 4)
    drained = ep.poll(0)
    c.shutdown(socket.SHUT_WR)
    at_fin = ep.poll(5)
    return {"idle": [e for _, e in idle], "ready": [e for _, e in ready], "read": data.decode(),
            "drained": [e for _, e in drained], "atFin": [e for _, e in at_fin]}


def case_halfclose(port):
    c, s = pair(port)
    payload = os.urandom(3 << 20)

    def send():  # from another thread: 3 MiB need not fit in the buffers
        c.sendall(payload)
        c.shutdown(socket.SHUT_WR)  # FIN right behind data still queued or in flight
    sender = threading.Thread(target=send)
    sender.start()
    got = recv_all(s)
    sender.join()
    reply = os.urandom(1 << 20)
    s.sendall(reply)
    s.close()
    back = recv_all(c)
    return {"serverGotAll": got == payload, "serverGot": len(got),
            "clientGotAll": back == reply, "clientGot": len(back)}


def case_close_unread(port):
    c, s = pair(port)
    c.sendall(b"never read" * 10)
    # Wait until the bytes are at the receiver, then close without reading.
    wait_readable(s)
    s.close()
    wait_readable(c)
    first = outcome(lambda: c.recv(100))
    second = outcome(lambda: c.recv(100))
    return {"clientRecv1": first, "clientRecv2": second}


def case_reset(port):
    c, s = pair(port)
    s.sendall(b"before reset")
    wait_readable(c)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()  # RST
    results = []
    for _ in range(3):
        wait_readable(c, 2)
        results.append(outcome(lambda: c.recv(100)))
    return {"clientRecvs": results}


def case_sendfile(port):
    c, s = pair(port)
    data = os.urandom((2 << 20) + 12345)
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.flush()
        sent = 0
        while sent < len(data):
            sent += os.sendfile(c.fileno(), f.fileno(), sent, len(data) - sent)
    c.shutdown(socket.SHUT_WR)
    got = recv_all(s)
    return {"sent": sent, "got": len(got), "intact": hashlib.sha256(got).digest() == hashlib.sha256(data).digest()}


def case_tfo(port):
    lst = listener(port, [(socket.IPPROTO_TCP, socket.TCP_FASTOPEN, 16)])
    results = []
    for i in range(3):  # the first gets a cookie, later ones carry data in the SYN
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        req = os.urandom(1000 + i)
        try:
            sent = c.sendto(req, socket.MSG_FASTOPEN, (HOST, port))
        except BlockingIOError:  # non-blocking and no cookie yet: a plain SYN went out
            sent = 0
        if sent < len(req):
            select.select([], [c], [], TIMEOUT)
            c.sendall(req[sent:])
        s, _ = lst.accept()
        got = recv_exact(s, len(req))
        reply = os.urandom(2000 + i)
        s.sendall(reply)
        more = os.urandom(50000)
        c.sendall(more)
        c.shutdown(socket.SHUT_WR)
        got += recv_all(s)
        s.close()
        back = recv_all(c)
        c.close()
        results.append(got == req + more and back == reply)
    return {"intact": results}


def case_defer_accept(port):
    lst = listener(port, [(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 5)])
    c = socket.create_connection((HOST, port))
    req = os.urandom(5000)
    c.sendall(req)
    s, _ = lst.accept()
    reply = os.urandom(70000)
    s.sendall(reply)
    got = recv_exact(s, len(req))
    s.close()
    back = recv_all(c)
    return {"intact": got == req and back == reply}


def wait_signal(sig=signal.SIGUSR1):
    """Blocks until the test sends `sig`: the test drives the phases."""
    signal.sigwait([sig])


def event(name, **kw):
    print(json.dumps({"event": name, **kw}), flush=True)


class Reader(threading.Thread):
    """Reads a socket to EOF at a bounded rate, hashing what it reads."""

    def __init__(self, sock, chunk, pause_s):
        super().__init__(daemon=True)
        self.sock, self.chunk, self.pause_s = sock, chunk, pause_s
        self.hash, self.count = hashlib.sha256(), 0
        self.go = threading.Event()

    def run(self):
        self.go.wait()
        while True:
            data = self.sock.recv(self.chunk)
            if not data:
                return
            self.hash.update(data)
            self.count += len(data)
            if self.pause_s:
                time.sleep(self.pause_s)  # the slowness under test, not synchronisation


RCVBUF = 128 * 1024
SNDBUF = 64 * 1024


def case_slow_reader(port):
    """A reader that stops reading: the writer must be held back, memory bounded."""
    lst = listener(port, [(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)])
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
    c.connect((HOST, port))
    s, _ = lst.accept()
    c.setblocking(False)
    sent_hash, accepted = hashlib.sha256(), 0
    block = os.urandom(64 * 1024)
    while True:  # the reader reads nothing: write until the kernel says EAGAIN
        try:
            n = c.send(block)
        except BlockingIOError:
            break
        sent_hash.update(block[:n])
        accepted += n
        if accepted > (256 << 20):
            break  # never held back: stop, the test fails on `accepted`
    # What the node holds for this connection, as the kernel reports it: all
    # bytes queued at the receiver (FIONREAD counts the redirect queue too on
    # this kernel; the fionread case checks that) and the writer's TCP queue.
    queued_at_receiver = fionread(s)
    writer_outq = struct.unpack("i", fcntl.ioctl(c.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
    reader = Reader(s, 256 * 1024, 0.0005)
    reader.start()
    reader.go.set()
    c.settimeout(60)
    rest = 16 << 20
    while rest > 0:
        chunk = os.urandom(min(rest, 1 << 20))
        c.sendall(chunk)
        sent_hash.update(chunk)
        rest -= len(chunk)
        accepted += len(chunk)
    c.shutdown(socket.SHUT_WR)
    reader.join(60)
    return {"acceptedAtStall": accepted - (16 << 20), "queuedAtReceiver": queued_at_receiver,
            "writerOutq": writer_outq,
            "rcvbuf": s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
            "sndbuf": c.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
            "intact": reader.count == accepted and reader.hash.digest() == sent_hash.digest()}


def case_toggle(port):
    """Three phases of a stream to a slow reader; the test toggles the pod between them."""
    c, s = pair(port)
    reader = Reader(s, 64 * 1024, 0.0002)
    reader.start()
    reader.go.set()
    sent_hash, total = hashlib.sha256(), 0
    for phase in range(3):
        for _ in range(64):
            chunk = os.urandom(random.randint(1, 256 * 1024))
            c.sendall(chunk)
            sent_hash.update(chunk)
            total += len(chunk)
        if phase < 2:
            event("phase", n=phase)
            wait_signal()
    c.shutdown(socket.SHUT_WR)
    reader.join(120)
    return {"sent": total, "got": reader.count, "intact": reader.hash.digest() == sent_hash.digest()}


def tagged_exchange(c, s, recv):
    """Says "connected", waits for SIGUSR1, then sends CASE_TAG-made messages
    each way and reports whether each end got exactly the other's."""
    event("connected")
    wait_signal()
    tag = os.environ["CASE_TAG"].encode()
    msg_c, msg_s = tag * 50000, tag[::-1] * 50000
    c.sendall(msg_c)
    s.sendall(msg_s)
    got_s = recv(s, len(msg_c))
    got_c = recv(c, len(msg_s))
    return {"serverGotOwn": got_s == msg_c, "clientGotOwn": got_c == msg_s}


def case_fixed_tuple(port):
    """127.0.0.1:CLIENT_PORT -> 127.0.0.1:port, held open until SIGUSR1, then a tagged exchange."""
    lst = listener(port)
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    c.bind((HOST, 40000))
    c.connect((HOST, port))
    s, _ = lst.accept()
    return tagged_exchange(c, s, recv_exact)


def case_same_v6_tuple(port):
    """[::6]:40000 -> [CASE_SERVER6]:port, Istio's inbound passthrough source, with
    the handshake's sequence numbers fixed too: the client's ISN is set through
    TCP_REPAIR's send-queue sequence before connect(), the server's is a SYN
    cookie (the test sets tcp_syncookies=2), which depends only on the 4-tuple,
    the client's ISN and the minute. So two pods with the same addresses build
    the very same connection. CASE_BLOCKING=1: the client reads blocking, so it
    is never registered and only its server is. Held open until SIGUSR1, then a
    tagged exchange each way."""
    tcp_repair, tcp_repair_queue, tcp_queue_seq, tcp_send_queue, tcp_repair_off_no_wp = 19, 20, 21, 2, -1
    server = os.environ["CASE_SERVER6"]
    lst = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind((server, port))
    lst.listen(16)
    # Teach the datapath how this listener's sockets are read (see probe()).
    p = socket.create_connection((server, port))
    p.sendall(b"?")
    ps, _ = lst.accept()
    ps.recv(1)
    ps.sendall(b"!")
    p.recv(1)
    p.close()
    ps.close()
    c = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    c.setsockopt(socket.IPPROTO_TCP, tcp_repair, 1)
    c.setsockopt(socket.IPPROTO_TCP, tcp_repair_queue, tcp_send_queue)
    c.setsockopt(socket.IPPROTO_TCP, tcp_queue_seq, 0x5EED0000)
    c.setsockopt(socket.IPPROTO_TCP, tcp_repair, tcp_repair_off_no_wp)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    c.bind(("::6", 40000))
    if os.environ.get("CASE_BLOCKING") == "1":
        c.settimeout(None)
    c.connect((server, port))
    s, _ = lst.accept()

    def recv_or_none(sock, n):
        try:
            return recv_exact(sock, n)
        except TimeoutError:
            return None

    return tagged_exchange(c, s, recv_or_none)


class Writer(threading.Thread):
    """Sends `total` random bytes in chunks of random size, then closes its write side.
    Records what it sent (sha256) and any error the application saw."""

    def __init__(self, sock, total):
        super().__init__(daemon=True)
        self.sock, self.total = sock, total
        self.hash, self.sent, self.error = hashlib.sha256(), 0, None

    def run(self):
        # Slices of one random block: the writer spends its time in send(), not in urandom().
        block = memoryview(os.urandom(1 << 20))
        try:
            while self.sent < self.total:
                start = random.randint(0, len(block) - 1)
                chunk = block[start:start + min(self.total - self.sent, random.randint(1, 256 * 1024))]
                self.sock.sendall(chunk)
                self.hash.update(chunk)
                self.sent += len(chunk)
        except OSError as e:
            self.error = errno.errorcode.get(e.errno, str(e))
        try:
            self.sock.shutdown(socket.SHUT_WR)  # after an error too: the reader must see its end
        except OSError:
            pass


def case_withdraw_under_traffic(port):
    """The reader of a paired connection turns blocking while its peer streams into
    it, then answers every read with one byte: each of those sends is a TCP segment
    at which the datapath may take the reader out of the sockhash (I6), while the
    writer may be between its verdict and its enqueue. Nothing may be lost and
    neither end may see an error. Thousands of connections, so that the moment
    comes: without the fix several in a thousand lost bytes or got EPIPE."""
    conns = int(os.environ.get("CASE_CONNS", "1024"))
    per_conn = int(os.environ.get("CASE_BYTES", str(2 << 20)))
    intact, errors = 0, []
    for _ in range(conns):
        # A fresh listener each time: one whose socket turned blocking is never trusted again.
        lst = listener(0)
        c = socket.create_connection(lst.getsockname())
        s, _ = lst.accept()
        lst.close()
        writer = Writer(c, per_conn)
        writer.start()
        threading.Thread(target=recv_all, args=(c, 60), daemon=True).start()  # the answers
        got_hash, got = hashlib.sha256(), 0
        try:
            first = s.recv(64 * 1024)  # redirected while still non-blocking
            got_hash.update(first)
            got += len(first)
            s.settimeout(None)  # blocking from here on; SO_RCVTIMEO keeps it so, and bounds a hang
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 20, 0))
            answer = b"x" * 8192  # a longer send holds the reader's lock longer: the writer's redirect waits on it
            while True:
                s.sendall(answer)
                data = s.recv(256 * 1024)
                if not data:
                    break
                got_hash.update(data)
                got += len(data)
        except OSError as e:
            errors.append("reader " + errno.errorcode.get(e.errno, str(e)))
        writer.join(60)
        if writer.error:
            errors.append("writer " + writer.error)
        if got == writer.sent and got_hash.digest() == writer.hash.digest():
            intact += 1
        else:
            errors.append(f"short: {got} of {writer.sent}")
        c.close()
        s.close()
    return {"conns": conns, "intact": intact, "errors": errors[:10]}


SMALL_RCVBUF = 16 * 1024  # the kernel doubles it: the redirect bound is then 32 KiB


def small_rcvbuf_pair(port):
    """A (client, server) pair whose server set SO_RCVBUF (inherited from its listener),
    so that the datapath's bound on its redirect queue is small and a burst overflows it."""
    lst = listener(port, [(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_RCVBUF)])
    c = socket.create_connection((HOST, port))
    s, _ = lst.accept()
    lst.close()
    return c, s


def push_until_full(sock, data):
    """Sends from `data` without waiting until the kernel takes no more (or all of it
    is sent); returns how many bytes it took. Over the reader's bound the datapath
    has put the rest on TCP by then, and TCP's flow control is what said EAGAIN."""
    sock.setblocking(False)
    sent = 0
    try:
        while sent < len(data):
            sent += sock.send(data[sent:sent + 8 * 1024])
    except BlockingIOError:
        pass
    sock.settimeout(TIMEOUT)
    return sent


def case_resume_peek(port):
    """Three times: a burst pushes the direction from redirect to TCP (its reader's
    queue is bounded by a small SO_RCVBUF), the reader reads every byte of it, and
    then one 1000-byte message goes out: the datapath may send that one redirected
    again (I2). What the reader sees of it, FIONREAD and MSG_PEEK included, must be
    what plain TCP shows."""
    c, s = small_rcvbuf_pair(port)
    seen = []
    intact = True
    for i in range(3):
        burst = os.urandom(4 << 20)
        burst = burst[:push_until_full(c, burst)]
        intact = intact and recv_exact(s, len(burst)) == burst
        msg = bytes([i + 1]) * 1000
        c.sendall(msg)
        wait_readable(s)
        before = fionread(s)
        peek = s.recv(4096, socket.MSG_PEEK)
        after_peek = fionread(s)
        data = recv_exact(s, 1000)
        seen.append({"fionread": before, "peek": len(peek), "peekEqual": peek == msg,
                     "fionreadAfterPeek": after_peek, "readEqual": data == msg, "fionreadAfterRead": fionread(s)})
    return {"rounds": seen, "burstsIntact": intact}


def thread_wchan(tid):
    with open(f"/proc/self/task/{tid}/wchan") as f:
        return f.read().strip()


def case_resume_waitall(port):
    """The reader turns blocking and reads the rest of a burst, the part TCP carries,
    with one MSG_WAITALL read that asks for 1000 bytes more: TCP's own recvmsg copies
    every TCP byte and waits inside for the rest. Then the writer sends those 1000.
    TCP's recvmsg never looks at the redirect queue: were they redirected, the read
    would wait for TCP bytes that never come (until SO_RCVTIMEO, 20 s, ends it with
    EAGAIN). It must return in full."""
    c, s = small_rcvbuf_pair(port)
    burst, more = os.urandom(4 << 20), os.urandom(1000)
    burst = burst[:push_until_full(c, burst)]
    total = len(burst) + len(more)
    got = [s.recv(1)]  # still non-blocking: the burst's first redirected byte
    s.settimeout(None)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 20, 0))
    result = {}

    def reader():
        try:
            have = len(got[0])
            # A read of the redirect queue stops at its end; the one after it
            # finds only TCP's queue and stays in TCP's recvmsg to the end.
            while have < total:
                chunk = s.recv(total - have, socket.MSG_WAITALL)
                if not chunk:
                    break
                got.append(chunk)
                have += len(chunk)
        except OSError as e:
            result["error"] = errno.errorcode.get(e.errno, str(e))
    r = threading.Thread(target=reader, daemon=True)
    r.start()
    # Every TCP byte delivered (the writer's queue is empty) and the reader asleep
    # in the kernel again: it has copied them all and waits for the rest.
    deadline = time.monotonic() + 30
    while struct.unpack("i", fcntl.ioctl(c.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0] or \
            thread_wchan(r.native_id) != "wait_woken":
        if time.monotonic() > deadline or not r.is_alive():
            break
        time.sleep(0.001)  # polling a kernel state no event reports
    c.sendall(more)
    r.join(30)
    data = b"".join(got)
    # TCP returns from a MSG_WAITALL read only with all it asked for: the read
    # that waited brings the message together with the burst's last TCP bytes.
    # (One that SO_RCVTIMEO ended returns short, and the message comes later.)
    return {"burstIntact": data[:len(burst)] == burst, "tailIntact": data[len(burst):] == more,
            "waitedReadComplete": len(got[-1]) > len(more), "error": result.get("error")}


def case_resume_flips(port):
    """A slow reader whose direction switches redirect -> TCP -> redirect again and
    again. Each burst (of random size, most of them over the reader's bound) is
    pushed while the reader waits, so that the part over the bound goes on TCP;
    then the reader reads everything, and the next burst may go redirected again
    (I2). Every byte is checked with a sha256. CASE_BURSTS sets how many bursts."""
    bursts = int(os.environ.get("CASE_BURSTS", "2000"))
    c, s = small_rcvbuf_pair(port)
    block = memoryview(os.urandom(1 << 20))
    sent_hash, got_hash = hashlib.sha256(), hashlib.sha256()
    sent = got = 0
    for _ in range(bursts):
        start = random.randint(0, len(block) - 256 * 1024)
        chunk = block[start:start + random.randint(1, 256 * 1024)]
        n = push_until_full(c, chunk)
        sent_hash.update(chunk[:n])
        sent += n
        while got < sent:
            data = s.recv(random.randint(1, 64 * 1024))
            if not data:
                break
            got_hash.update(data)
            got += len(data)
    c.shutdown(socket.SHUT_WR)
    tail = recv_all(s)
    return {"bursts": bursts, "sent": sent, "got": got, "after": len(tail),
            "intact": got == sent and not tail and got_hash.digest() == sent_hash.digest()}


def case_ktls(port):
    """kTLS (AES-GCM-128, fixed test keys) set up after a plaintext exchange, as a TLS
    library does after its handshake; then 1 MiB each way through kTLS."""
    tcp_ulp, sol_tls, tls_tx, tls_rx = 31, 282, 1, 2
    c, s = pair(port)
    c.sendall(b"client-hello")
    hello = recv_exact(s, 12)
    s.sendall(b"server-hello")
    hello += recv_exact(c, 12)
    info = struct.pack("=HH", 0x0303, 51) + bytes(range(8)) + bytes(range(16)) + bytes(4) + bytes(8)
    setup = []
    for sock in (c, s):
        setup.append(outcome(lambda: sock.setsockopt(socket.IPPROTO_TCP, tcp_ulp, b"tls")))
        setup.append(outcome(lambda: sock.setsockopt(sol_tls, tls_tx, info)))
        setup.append(outcome(lambda: sock.setsockopt(sol_tls, tls_rx, info)))
    if any("err" in o for o in setup):
        return {"hello": hello.decode(), "setup": setup}
    up, down = os.urandom(1 << 20), os.urandom(1 << 20)
    c.sendall(up)
    got_up = recv_exact(s, len(up))
    s.sendall(down)
    got_down = recv_exact(c, len(down))
    return {"hello": hello.decode(), "setup": setup, "intact": got_up == up and got_down == down}


CASES = {
    "peek": case_peek, "rcvlowat": case_rcvlowat, "inq": case_inq, "txtstamp": case_txtstamp, "peekoff": case_peekoff, "rxtstamp": case_rxtstamp, "zerocopy": case_zerocopy, "trunc": case_trunc, "oob": case_oob, "fionread": case_fionread, "epoll": case_epoll,
    "halfclose": case_halfclose, "close-unread": case_close_unread, "reset": case_reset,
    "sendfile": case_sendfile, "tfo": case_tfo, "defer-accept": case_defer_accept,
    "ktls": case_ktls, "slow-reader": case_slow_reader, "toggle": case_toggle, "fixed-tuple": case_fixed_tuple,
    "same-v6-tuple": case_same_v6_tuple, "withdraw-under-traffic": case_withdraw_under_traffic,
    "resume-peek": case_resume_peek, "resume-waitall": case_resume_waitall, "resume-flips": case_resume_flips,
}

if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])  # taken by sigwait only
    name = sys.argv[1]
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 9000
    print(json.dumps({"case": name, "result": CASES[name](port)}), flush=True)
