// A test app that runs inside a pod: both ends of many TCP streams, each
// direction random bytes in random write sizes, hashed as sent and as
// received. Every stream starts with its sender's 8-byte id so the test can
// match the two ends' reports. Output: JSON lines on stdout.
//
//   server --listen HOST:PORT --bytes N [--max-write B] [--end-after-peer 1] [--expect N]
//   client --connect HOST:PORT --bytes N [--conns C] [--concurrency K] [--max-write B] [--hold 1 --expect N]
//   probe --connect HOST:PORT
//
// probe: one connection with the all-zero id that reads the server's stream
// to its end, prints {"event":"probed"}; servers never report probe streams.
// It makes a fresh server send once, so the datapath learns how its
// listener's sockets are read (I6 in bpf/sidecar_accel.bpf.c).
//
// --hold: once it has sent everything and received N bytes, print
// {"event":"holding"} and keep its write side open until SIGUSR1, so a test can inspect live sockets (ss).
// A server's --expect: print {"event":"received"} once a connection has received N bytes.
import crypto from 'node:crypto';
import net from 'node:net';

interface Args { [k: string]: string }

function parseArgs(argv: string[]): { mode: string; args: Args } {
  const [mode = '', ...rest] = argv;
  const args: Args = {};
  for (let i = 0; i < rest.length; i += 2) args[rest[i]!.replace(/^--/, '')] = rest[i + 1] ?? '';
  return { mode, args };
}

function hostPort(s: string): { host: string; port: number } {
  const i = s.lastIndexOf(':');
  return { host: s.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(s.slice(i + 1)) };
}

const POOL = crypto.randomBytes(8 << 20);

/** Log-uniform in [1, max]: many tiny writes and some huge ones. */
function writeSize(max: number): number {
  return Math.max(1, Math.min(max, Math.floor(Math.exp(Math.random() * Math.log(max + 1)))));
}

export interface StreamReport {
  role: 'client' | 'server';
  id: string;
  peerId: string;
  sentBytes: number;
  sentSha: string;
  recvBytes: number;
  recvSha: string;
  error?: string;
}

/** Drives one connection: sends `total` bytes then half-closes; hashes what arrives. */
interface StreamOptions {
  /** Client: once `expect` bytes arrived and all was sent, emit "holding" and wait for this. */
  hold?: Promise<void>;
  expect?: number;
  /** Server: half-close only after the client did, so every hop stays open meanwhile. */
  endAfterPeer?: boolean;
  /** Server: say when `expect` bytes have arrived. */
  announce?: boolean;
}

function runStream(sock: net.Socket, role: 'client' | 'server', total: number, maxWrite: number, opts: StreamOptions = {}): Promise<StreamReport> {
  const { hold, expect = 0, endAfterPeer = false, announce = false } = opts;
  const id = crypto.randomBytes(8);
  const sentHash = crypto.createHash('sha256');
  const recvHash = crypto.createHash('sha256');
  let recvBytes = 0;
  let head = Buffer.alloc(0);
  let gotExpected: () => void = () => {};
  const expected = new Promise<void>((resolve) => { gotExpected = resolve; });
  if (expect === 0) gotExpected();
  if (announce && expect > 0) void expected.then(() => { if (head.toString('hex') !== PROBE_ID) emit({ event: 'received', role }); });
  let error: string | undefined;
  sock.on('data', (d: Buffer) => {
    recvHash.update(d);
    recvBytes += d.length;
    if (recvBytes >= expect) gotExpected();
    if (head.length < 8) head = Buffer.concat([head, d.subarray(0, 8 - head.length)]);
  });
  const peerEnded = new Promise<void>((resolve) => sock.once('end', () => resolve()));
  const sent = new Promise<number>((resolve) => {
    let sentBytes = 0;
    const first = id;
    sentHash.update(first);
    sock.write(first);
    sentBytes += first.length;
    const pump = () => {
      while (sentBytes < total) {
        const n = Math.min(writeSize(maxWrite), total - sentBytes);
        const off = Math.floor(Math.random() * (POOL.length - n));
        const chunk = POOL.subarray(off, off + n);
        sentHash.update(chunk);
        sentBytes += n;
        if (!sock.write(chunk)) { sock.once('drain', pump); return; }
      }
      const finish = () => { sock.end(); resolve(sentBytes); };
      if (hold) void expected.then(() => { emit({ event: 'holding' }); return hold; }).then(finish);
      else if (endAfterPeer) void peerEnded.then(finish);
      else finish();
    };
    pump();
  });
  return new Promise((resolve) => {
    sock.on('error', (e) => { error = e.message; });
    sock.on('close', () => {
      void sent.then((sentBytes) => resolve({
        role, id: id.toString('hex'), peerId: head.toString('hex'), sentBytes, sentSha: sentHash.digest('hex'),
        recvBytes, recvSha: recvHash.digest('hex'), ...(error ? { error } : {}),
      }));
      if (error) resolve({ role, id: id.toString('hex'), peerId: head.toString('hex'), sentBytes: -1, sentSha: '', recvBytes, recvSha: '', error });
    });
  });
}

function emit(o: object): void {
  process.stdout.write(JSON.stringify(o) + '\n');
}

async function server(args: Args): Promise<void> {
  const { host, port } = hostPort(args.listen ?? '');
  const total = Number(args.bytes ?? 0);
  const maxWrite = Number(args['max-write'] ?? 65536);
  const srv = net.createServer({ allowHalfOpen: true }, (sock) => {
    void runStream(sock, 'server', total, maxWrite, {
      endAfterPeer: args['end-after-peer'] === '1', expect: Number(args.expect ?? 0), announce: true,
    }).then((r) => { if (r.peerId !== PROBE_ID) emit(r); });
  });
  srv.listen({ host, port, backlog: 4096 }, () => emit({ event: 'ready' }));
  process.on('SIGTERM', () => process.exit(0));
}

const PROBE_ID = '0'.repeat(16);

async function probe(args: Args): Promise<void> {
  const { host, port } = hostPort(args.connect ?? '');
  const sock = net.connect({ host, port });
  sock.on('connect', () => sock.end(Buffer.alloc(8)));
  let got = 0;
  sock.on('data', (d: Buffer) => { got += d.length; });
  // Read to the end, so no reset races the probe's bytes through the sidecars.
  sock.on('end', () => { if (got >= 8) emit({ event: 'probed' }); else { emit({ event: 'probe-failed', got }); process.exitCode = 1; } });
  sock.on('error', (e) => { emit({ event: 'probe-failed', error: e.message }); process.exitCode = 1; });
}

async function client(args: Args): Promise<void> {
  const { host, port } = hostPort(args.connect ?? '');
  const total = Number(args.bytes ?? 0);
  const conns = Number(args.conns ?? 1);
  const concurrency = Number(args.concurrency ?? 1);
  const maxWrite = Number(args['max-write'] ?? 65536);
  const expect = Number(args.expect ?? 0);
  const hold = args.hold ? new Promise<void>((resolve) => process.once('SIGUSR1', () => resolve())) : undefined;
  let next = 0;
  const worker = async () => {
    while (next < conns) {
      next++;
      const sock = net.connect({ host, port, allowHalfOpen: true });
      await new Promise<void>((resolve) => {
        // Write as soon as the handshake completes: the racy case for pairing.
        sock.once('connect', () => { void runStream(sock, 'client', total, maxWrite, { hold, expect }).then((r) => { emit(r); resolve(); }); });
        sock.once('error', (e) => {
          if (!sock.connecting) return;
          emit({ role: 'client', id: '', peerId: '', sentBytes: -1, sentSha: '', recvBytes: 0, recvSha: '', error: e.message });
          resolve();
        });
      });
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  emit({ event: 'done' });
}

const { mode, args } = parseArgs(process.argv.slice(2));
if (mode === 'server') void server(args);
else if (mode === 'client') void client(args);
else if (mode === 'probe') void probe(args);
else {
  process.stderr.write('usage: stream-peer server|client ...\n');
  process.exit(2);
}
