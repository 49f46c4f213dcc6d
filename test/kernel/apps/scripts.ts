// Python programs the application scenarios run in the pods: plain blocking
// sockets and the standard library's HTTP client, no timeouts (a hang is
// caught by the harness's kill and shows as a different outcome).

/** urllib client: argv base URL then paths; prints one JSON list of {path, status, len, sha256} or the error. */
export const URLLIB_CLIENT = `
import errno, hashlib, json, sys, urllib.error, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never an environment proxy
base, paths = sys.argv[1], sys.argv[2:]
out = []
for p in paths:
    try:
        with opener.open(base + p) as r:
            body = r.read()
            out.append({"path": p, "status": r.status, "len": len(body), "sha256": hashlib.sha256(body).hexdigest()})
    except urllib.error.HTTPError as e:
        body = e.read()
        out.append({"path": p, "status": e.code, "len": len(body), "sha256": hashlib.sha256(body).hexdigest()})
    except Exception as e:
        err = e.reason if isinstance(e, urllib.error.URLError) and isinstance(e.reason, OSError) else e
        code = getattr(err, "errno", None)
        out.append({"path": p, "error": type(err).__name__, "errno": errno.errorcode.get(code, code) if code else None})
print(json.dumps(out))
`;

/**
 * Blocking reply server: each connection is read to EOF, then answered with
 * "reply <sha256 of the request> <length>\\n" and closed. A thread per
 * connection, blocking sockets.
 */
export const HALFCLOSE_SERVER = `
import hashlib, socket, sys, threading
srv = socket.create_server(("0.0.0.0", int(sys.argv[1])), backlog=128)
def handle(c):
    with c:
        try:
            buf = b""
            while True:
                d = c.recv(65536)
                if not d:
                    break
                buf += d
            c.sendall(b"reply " + hashlib.sha256(buf).hexdigest().encode() + b" " + str(len(buf)).encode() + b"\\n")
        except OSError:
            pass
while True:
    c, _ = srv.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()
`;

/**
 * Blocking half-close client: n sequential connections, each sends a
 * request, shutdown(SHUT_WR), then recv() until EOF; the reply must be
 * exact and followed by EOF. Prints {total, ok, wrongReply, errors{errno
 * name: count}, firstError}.
 */
export const HALFCLOSE_CLIENT = `
import errno, hashlib, json, socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ok, wrong, errors, first = 0, 0, {}, None
for i in range(n):
    req = (("request %d " % i) * (1 + i % 64)).encode()
    want = b"reply " + hashlib.sha256(req).hexdigest().encode() + b" " + str(len(req)).encode() + b"\\n"
    s = socket.socket()  # blocking, no timeout
    try:
        s.connect((host, port))
        s.sendall(req)
        s.shutdown(socket.SHUT_WR)
        got = b""
        while True:
            d = s.recv(65536)
            if d == b"":
                break  # EOF after the reply
            got += d
        if got == want:
            ok += 1
        else:
            wrong += 1
            first = first or "#%d reply %r" % (i, got[:80])
    except OSError as e:
        name = errno.errorcode.get(e.errno, str(e.errno))
        errors[name] = errors.get(name, 0) + 1
        first = first or "#%d %s: %s" % (i, type(e).__name__, e)
    finally:
        s.close()
print(json.dumps({"total": n, "ok": ok, "wrongReply": wrong, "errors": errors, "firstError": first}))
`;
