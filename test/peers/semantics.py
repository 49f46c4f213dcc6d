#!/usr/bin/env python3
"""Socket-semantics peer, the Python twin of test/peers/semantics.c.

Same roles, protocol, cases and observation keys, so C and Python peers
mix (a C client against a Python server and the other way round):

  server --listen ADDR --style S            accepts forever, a process per connection
  client --connect ADDR --style S --case C --id ID [--repeat N]

Styles Python offers: block (blocking, no timeout), timeout (settimeout():
CPython makes the file O_NONBLOCK and waits in poll() up to the timeout),
poll (setblocking(False) + select.poll), selectors (setblocking(False) +
selectors.EpollSelector, level-triggered).

Signals: CPython retries a call interrupted by a signal whose handler
returns (PEP 475), so "restart" completes in every style; "eintr" raises
from the handler, which aborts the waiting call ("interrupted").
"""
import errno
import fcntl
import hashlib
import json
import os
import select
import selectors
import signal
import socket
import struct
import sys
import termios
import time
from array import array

STYLES = ("block", "timeout", "poll", "selectors")
TIMEO_CASE = 0.3    # the timeout a timeout case measures
TIMEO_IDLE = 10.0   # the timeout style's timeout elsewhere: never reached
SMALL = 1000
CHUNK = 64 << 10
PHASE2 = 1 << 20
TCP_CLOSE_WAIT = 8


class Interrupted(Exception):
    pass


def pattern(off, n, seed):
    """Byte p of stream `seed` is byte p%4 of (seed + p//4) as a LE u32 (as semantics.c)."""
    w0, w1 = off // 4, (off + n + 3) // 4
    b = array("I", range(seed + w0, seed + w1))
    if sys.byteorder != "little":
        b.byteswap()
    s = off - 4 * w0
    return b.tobytes()[s:s + n]


def sha(b):
    return hashlib.sha256(b).hexdigest()


def errname(e):
    if isinstance(e, Interrupted):
        return "interrupted"
    if isinstance(e, socket.timeout):
        return "timeout"
    if isinstance(e, OSError) and e.errno:
        return errno.errorcode.get(e.errno, "E%d" % e.errno)
    return type(e).__name__


class Obs(dict):
    def rc(self, key, f):
        """Records what a call returned (an int, a bytes length) or its error name."""
        try:
            r = f()
        except Exception as e:  # noqa: BLE001 - an error is an observation
            self[key] = errname(e)
            return None
        self[key] = len(r) if isinstance(r, (bytes, bytearray)) else (0 if r is None else r)
        return r


class Conn:
    def __init__(self, sock, style):
        self.s = sock
        self.style = style
        self.nonblocking = style != "block"
        self.waiting = style in ("poll", "selectors")
        if style == "timeout":
            sock.settimeout(TIMEO_IDLE)
        elif self.waiting:
            sock.setblocking(False)
        if style == "poll":
            self.poller = select.poll()
            self.poller.register(sock, select.POLLIN)
        elif style == "selectors":
            self.sel = selectors.EpollSelector()
            self.sel.register(sock, selectors.EVENT_READ)

    def wait(self, out):
        if self.style == "poll":
            self.poller.modify(self.s, select.POLLOUT if out else select.POLLIN)
            self.poller.poll()
        elif self.style == "selectors":
            self.sel.modify(self.s, selectors.EVENT_WRITE if out else selectors.EVENT_READ)
            self.sel.select()

    def rd(self, n, flags=0):
        while True:
            if self.waiting:
                self.wait(False)
            try:
                return self.s.recv(n, flags)
            except BlockingIOError:
                if not self.waiting:
                    raise

    def wr(self, data):
        while True:
            try:
                return self.s.send(data)
            except BlockingIOError:
                if not self.waiting:
                    raise
                self.wait(True)

    def wr_all(self, data):
        done = 0
        mv = memoryview(data)
        while done < len(data):
            done += self.wr(mv[done:])
        return done

    def rd_exact(self, n):
        got = b""
        while len(got) < n:
            try:
                d = self.rd(n - len(got))
            except OSError:
                if got:
                    return got
                raise
            if not d:
                break
            got += d
        return got

    def read_to_end(self, o, pfx):
        h = hashlib.sha256()
        total = 0
        end = "eof"
        while True:
            try:
                d = self.rd(65536)
            except Exception as e:  # noqa: BLE001
                end = errname(e)
                break
            if not d:
                break
            h.update(d)
            total += len(d)
        if o is not None:
            o[pfx + "End"] = end
            o[pfx + "Bytes"] = total
            o[pfx + "Sha"] = h.hexdigest()
        return total, h.hexdigest()

    def inq(self):
        return struct.unpack("i", fcntl.ioctl(self.s.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]

    def wait_inq(self, want):
        n = self.inq()
        for _ in range(10000):
            if n >= want:
                break
            time.sleep(0.0005)
            n = self.inq()
        return n

    def rst_close(self, o):
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        o.rc("rstClose", self.s.close)


def wait_sigusr1():
    signal.sigwait({signal.SIGUSR1})


def full_writer(c, o, reader):
    """As semantics.c full_writer; the timeout style fills with timed sends (sndtimeo)."""
    timed = c.style == "timeout"
    h = hashlib.sha256()
    sent = 0
    if timed:
        c.s.settimeout(TIMEO_CASE)
    while True:
        chunk = pattern(sent, CHUNK, 21)
        t0 = time.monotonic()
        try:
            r = c.s.send(chunk) if timed else c.s.send(chunk, socket.MSG_DONTWAIT)
        except OSError as e:
            o["fillEnd"] = errname(e)
            if timed:
                o["fillTimeout"] = "after" if time.monotonic() - t0 >= TIMEO_CASE - 0.005 else "before"
            break
        h.update(chunk[:r])
        sent += r
        if sent > (1 << 30):
            o["fillEnd"] = "never full"
            break
    if timed:
        c.s.settimeout(TIMEO_IDLE)
    os.kill(reader, signal.SIGUSR1)
    p2 = pattern(sent, PHASE2, 21)
    r = o.rc("phase2Write", lambda: c.wr(p2)) if not c.nonblocking else c.wr(p2)
    if r:
        h.update(p2[:r])
        sent += r
        if r < PHASE2:
            c.wr_all(p2[r:])
            h.update(p2[r:])
            sent += PHASE2 - r
    o.rc("shutdown", lambda: c.s.shutdown(socket.SHUT_WR))
    try:
        reply = c.rd_exact(159)
    except OSError:
        reply = b""
    o["allArrived"] = reply == ("%d %s\n" % (sent, h.hexdigest())).encode()


def full_reader(c, o):
    wait_sigusr1()
    n, hexd = c.read_to_end(None, "in")
    o["readerEnd"] = "done"
    reply = ("%d %s\n" % (n, hexd)).encode()
    try:
        o["replied"] = c.wr_all(reply) == len(reply)  # its length varies: only whether it all went out
    except OSError:
        o["replied"] = False


def timeout_read(c, o):
    c.s.settimeout(TIMEO_CASE)
    t0 = time.monotonic()
    o.rc("timedRead", lambda: c.s.recv(1))
    o["timedReadReturned"] = "after-timeout" if time.monotonic() - t0 >= TIMEO_CASE - 0.005 else "before-timeout"
    c.s.settimeout(TIMEO_IDLE)
    o.rc("nudge", lambda: c.wr_all(b"t"))


def interrupted_read(c, o, restart):
    seen = [0]

    def on_alarm(_sig, _frame):
        seen[0] += 1
        try:
            c.s.send(b"x", socket.MSG_DONTWAIT)
        except OSError:
            seen[0] += 100
        if not restart:
            raise Interrupted()

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, 0.2)
    r = o.rc("firstRead", lambda: c.rd(10))
    if r is None:
        o.rc("secondRead", lambda: c.rd_exact(10))
    elif len(r) < 10:
        c.rd_exact(10 - len(r))
    o["signals"] = seen[0]


def case_client(c, o, name, spid):
    if name == "probe":
        return
    if name == "eof-s":
        c.read_to_end(o, "in")
        o.rc("readAfterEof", lambda: c.rd(1))
    elif name == "eof-c":
        o.rc("sent", lambda: c.wr_all(pattern(0, SMALL, 2)))
        o.rc("close", c.s.close)
    elif name == "halfclose-c":
        o.rc("sent", lambda: c.wr_all(pattern(0, 3000, 3)))
        o.rc("shutdown", lambda: c.s.shutdown(socket.SHUT_WR))
        c.read_to_end(o, "reply")
        o.rc("readAfterEof", lambda: c.rd(1))
    elif name == "halfclose-s":
        c.read_to_end(o, "in")
        o.rc("sent", lambda: c.wr_all(pattern(0, 500, 5)))
        o.rc("close", c.s.close)
    elif name == "shutrd":
        o.rc("shutdownRd", lambda: c.s.shutdown(socket.SHUT_RD))
        o.rc("readAfterShutRd", lambda: c.rd(4096))
        o.rc("go", lambda: c.wr_all(b"g"))
        for i in range(10000):
            if c.s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] == TCP_CLOSE_WAIT:
                break
            time.sleep(0.0005)
        o["peerFinSeen"] = i < 9999
        o["inqAfterFin"] = c.inq()
        total = 0
        last = None
        while True:
            try:
                d = c.s.recv(4096, socket.MSG_DONTWAIT)
            except OSError as e:
                last = errname(e)
                break
            if not d:
                last = 0
                break
            total += len(d)
        o["bytesAfterShutRd"] = total
        o["lastRead"] = last
    elif name == "rst-c":
        o.rc("w", lambda: c.wr_all(b"w"))
        o.rc("k", lambda: c.rd_exact(1))
        c.rst_close(o)
    elif name == "rst-s":
        o.rc("w", lambda: c.wr_all(b"w"))
        c.read_to_end(o, "in")
    elif name == "close-unread-s":
        o.rc("sent", lambda: c.wr_all(pattern(0, SMALL, 7)))
        c.read_to_end(o, "in")
    elif name == "close-unread-c":
        o["inqBeforeClose"] = c.wait_inq(SMALL)
        o.rc("close", c.s.close)
    elif name == "full-c2s":
        full_writer(c, o, spid)
    elif name == "full-s2c":
        full_reader(c, o)
    elif name == "big":
        n = (16 << 20) + 3
        d = pattern(0, n, 8)
        if not c.nonblocking:
            r = o.rc("singleWrite", lambda: c.s.send(d))
        else:
            r = c.wr(d)
        if r and r < n:
            c.wr_all(memoryview(d)[r:])
        o["sentSha"] = sha(d)
        o.rc("shutdown", lambda: c.s.shutdown(socket.SHUT_WR))
        c.read_to_end(o, "in")
    elif name == "waitall":
        if not c.nonblocking:
            got = o.rc("waitallRead", lambda: c.rd(10000, socket.MSG_WAITALL)) or b""
        else:
            got = c.rd(10000, socket.MSG_WAITALL)
        if got and len(got) < 10000:
            got += c.rd_exact(10000 - len(got))
        o["inBytes"] = len(got)
        o["inSha"] = sha(got)
        d = pattern(0, 10000, 10)
        for i in range(10):
            c.wr_all(d[1000 * i:1000 * (i + 1)])
        c.read_to_end(o, "end")
    elif name == "peek":
        if not c.nonblocking:
            o.rc("peekWaitall", lambda: c.s.recv(SMALL, socket.MSG_PEEK | socket.MSG_WAITALL))
        else:
            p = b""
            for _ in range(10000):
                p = c.rd(4096, socket.MSG_PEEK)
                if len(p) >= SMALL:
                    break
                time.sleep(0.0005)
            o["peekAll"] = len(p)
        p = o.rc("peekAgain", lambda: c.s.recv(4096, socket.MSG_PEEK | socket.MSG_DONTWAIT)) or b""
        o["peekSha"] = sha(p)
        o["inqAfterPeek"] = c.inq()
        r = o.rc("read", lambda: c.rd(4096)) or b""
        o["readSha"] = sha(r)
        o["inqAfterRead"] = c.inq()
        o.rc("done", lambda: c.wr_all(b"d"))
        c.read_to_end(o, "end")
    elif name == "fionread":
        if c.waiting:
            c.wait(False)
        o["inqReached"] = c.wait_inq(SMALL)
        r = o.rc("read", lambda: c.rd_exact(SMALL)) or b""
        o["readSha"] = sha(r)
        o["inqAfterRead"] = c.inq()
        o.rc("done", lambda: c.wr_all(b"d"))
        c.read_to_end(o, "end")
    elif name == "rcvtimeo-c":
        timeout_read(c, o)
        o.rc("afterNudge", lambda: c.rd_exact(10))
        o.rc("shutdown", lambda: c.s.shutdown(socket.SHUT_WR))
        c.read_to_end(o, "end")
    elif name == "rcvtimeo-s":
        o.rc("nudge", lambda: c.rd_exact(1))
        o.rc("sent", lambda: c.wr_all(b"0123456789"))
        c.read_to_end(o, "end")
    elif name in ("eintr", "restart"):
        interrupted_read(c, o, name == "restart")
        o.rc("shutdown", lambda: c.s.shutdown(socket.SHUT_WR))
        c.read_to_end(o, "end")
    else:
        o["error"] = "unknown case"


def case_server(c, o, name, cpid):
    if name == "probe":
        return
    if name == "eof-s":
        o.rc("sent", lambda: c.wr_all(pattern(0, SMALL, 1)))
        o.rc("close", c.s.close)
    elif name == "eof-c":
        c.read_to_end(o, "in")
        o.rc("readAfterEof", lambda: c.rd(1))
    elif name == "halfclose-c":
        _, hexd = c.read_to_end(o, "in")
        o.rc("replyHash", lambda: c.wr_all(hexd.encode()))
        o.rc("reply", lambda: c.wr_all(pattern(0, 2000, 4)))
        o.rc("close", c.s.close)
    elif name == "halfclose-s":
        o.rc("sent", lambda: c.wr_all(pattern(0, 2000, 6)))
        o.rc("shutdown", lambda: c.s.shutdown(socket.SHUT_WR))
        c.read_to_end(o, "in")
    elif name == "shutrd":
        o.rc("go", lambda: c.rd_exact(1))
        o.rc("sent", lambda: c.wr_all(pattern(0, 100, 9)))
        o.rc("close", c.s.close)
    elif name == "rst-c":
        o.rc("w", lambda: c.rd_exact(1))
        o.rc("k", lambda: c.wr_all(b"k"))
        c.read_to_end(o, "in")
    elif name == "rst-s":
        o.rc("w", lambda: c.rd_exact(1))
        c.rst_close(o)
    elif name == "close-unread-s":
        o["inqBeforeClose"] = c.wait_inq(SMALL)
        o.rc("close", c.s.close)
    elif name == "close-unread-c":
        o.rc("sent", lambda: c.wr_all(pattern(0, SMALL, 11)))
        c.read_to_end(o, "in")
    elif name == "full-c2s":
        full_reader(c, o)
    elif name == "full-s2c":
        full_writer(c, o, cpid)
    elif name == "big":
        c.read_to_end(o, "in")
        n = (16 << 20) + 5
        d = pattern(0, n, 12)
        if not c.nonblocking:
            r = o.rc("singleWrite", lambda: c.s.send(d))
        else:
            r = c.wr(d)
        if r and r < n:
            c.wr_all(memoryview(d)[r:])
        o["sentSha"] = sha(d)
        o.rc("close", c.s.close)
    elif name == "waitall":
        d = pattern(0, 10000, 13)
        for i in range(10):
            c.wr_all(d[1000 * i:1000 * (i + 1)])
        if not c.nonblocking:
            got = o.rc("waitallRead", lambda: c.rd(10000, socket.MSG_WAITALL)) or b""
        else:
            got = c.rd(10000, socket.MSG_WAITALL)
        if got and len(got) < 10000:
            got += c.rd_exact(10000 - len(got))
        o["inBytes"] = len(got)
        o["inSha"] = sha(got)
        o.rc("close", c.s.close)
    elif name in ("peek", "fionread"):
        o.rc("sent", lambda: c.wr_all(pattern(0, SMALL, 14)))
        o.rc("done", lambda: c.rd_exact(1))
        o.rc("close", c.s.close)
    elif name == "rcvtimeo-c":
        o.rc("nudge", lambda: c.rd_exact(1))
        o.rc("sent", lambda: c.wr_all(b"0123456789"))
        c.read_to_end(o, "in")
        o.rc("close", c.s.close)
    elif name == "rcvtimeo-s":
        timeout_read(c, o)
        o.rc("afterNudge", lambda: c.rd_exact(10))
        o.rc("close", c.s.close)
    elif name in ("eintr", "restart"):
        o.rc("x", lambda: c.rd_exact(1))
        o.rc("sent", lambda: c.wr_all(b"0123456789"))
        c.read_to_end(o, "in")
        o.rc("close", c.s.close)
    else:
        o["error"] = "unknown case"


def parse_addr(a):
    host, port = a.rsplit(":", 1)
    host = host.strip("[]")
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    return fam, (host, int(port))


def emit(role, ident, name, style, o):
    os.write(1, (json.dumps({"role": role, "id": ident, "case": name, "style": style, "obs": o},
                            separators=(",", ":")) + "\n").encode())


def serve_conn(sock, style):
    c = Conn(sock, style)
    try:
        hdr = c.rd_exact(64)
    except OSError:
        return
    if len(hdr) != 64:
        return  # a connect probe, not a case
    name, ident, cpid = hdr.decode().split()[:3]
    o = Obs()
    o.rc("ack", lambda: c.wr_all(("A %d" % os.getpid()).ljust(16).encode()))
    case_server(c, o, name, int(cpid))
    emit("server", ident, name, style, o)


def server(addr, style):
    fam, sa = parse_addr(addr)
    lsock = socket.socket(fam, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if fam == socket.AF_INET6:
        lsock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    lsock.bind(sa)
    lsock.listen(128)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    os.write(1, (json.dumps({"event": "ready", "style": style}) + "\n").encode())
    while True:
        try:
            sock, _ = lsock.accept()
        except OSError:
            continue
        if os.fork() == 0:
            lsock.close()
            try:
                serve_conn(sock, style)
            finally:
                os._exit(0)
        sock.close()


def client_once(addr, style, name, ident):
    fam, sa = parse_addr(addr)
    sock = socket.socket(fam, socket.SOCK_STREAM)
    if style == "block":
        sock.connect(sa)
    elif style == "timeout":
        sock.settimeout(TIMEO_IDLE)
        sock.connect(sa)
    else:
        sock.setblocking(False)
        try:
            sock.connect(sa)
        except BlockingIOError:
            select.select([], [sock], [])
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise OSError(err, os.strerror(err))
    c = Conn(sock, style)
    o = Obs()
    o.rc("hdr", lambda: c.wr_all(("%s %s %d" % (name, ident, os.getpid())).ljust(63).encode() + b"\n"))
    ack = o.rc("ack", lambda: c.rd_exact(16)) or b""
    spid = int(ack.decode().split()[1]) if len(ack) == 16 else 0
    case_client(c, o, name, spid)
    emit("client", ident, name, style, o)
    sock.close()


def main():
    argv = sys.argv[1:]
    role = argv[0] if argv else ""
    opts = dict(zip(argv[1::2], argv[2::2]))
    style = opts.get("--style", "block")
    if style not in STYLES or role not in ("server", "client"):
        sys.exit("usage: semantics.py server --listen ADDR --style S | client --connect ADDR --style S --case C [--id ID] [--repeat N]")
    if role == "server":
        server(opts["--listen"], style)
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    repeat = int(opts.get("--repeat", "1"))
    ident = opts.get("--id", "0")
    for i in range(repeat):
        client_once(opts["--connect"], style, opts["--case"], "%s.%d" % (ident, i) if repeat > 1 else ident)


if __name__ == "__main__":
    main()
