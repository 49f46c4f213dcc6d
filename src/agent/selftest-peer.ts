// Runs inside the agent's private self-test netns (enabled in the datapath)
// and checks, on this kernel, what an application would see on a paired
// connection: delivery, FIONREAD, MSG_PEEK, half-close with data in flight,
// and a stalled reader holding the writer back. Prints one JSON result.
import net from 'node:net';
import { once } from 'node:events';
import { native } from '../datapath/native.js';

const SOL_SOCKET = 1;
const SO_RCVBUF = 8;
const SO_SNDBUF = 7;

interface Check { name: string; ok: boolean; detail: string }
const checks: Check[] = [];
const check = (name: string, ok: boolean, detail: string) => checks.push({ name, ok, detail });

function fdOf(s: net.Socket): number {
  const fd = (s as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new Error('socket has no fd');
  return fd;
}

/**
 * One listener for every pair: the datapath registers an application's
 * accepted sockets only once their listener was seen reading non-blocking
 * (I6 in bpf/), which learnListener() shows it first.
 */
const srv = net.createServer({ pauseOnConnect: true, allowHalfOpen: true });
srv.listen(0, '127.0.0.1');
await once(srv, 'listening');
const port = (srv.address() as net.AddressInfo).port;

/** A connected pair; the server end does not read until resumed. */
async function connectedPair(): Promise<{ client: net.Socket; server: net.Socket; close: () => void }> {
  const accepted = once(srv, 'connection') as Promise<[net.Socket]>;
  const client = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
  await once(client, 'connect');
  const [server] = await accepted;
  return { client, server, close: () => { client.destroy(); server.destroy(); } };
}

/** The listener's first accepted socket sends once, as Node's always do: non-blocking. */
async function learnListener(): Promise<void> {
  const p = await connectedPair();
  const got = once(p.client, 'data');
  p.server.write('x');
  await got;
  p.close();
}

/** Reads until `expect` bytes arrived (leaves the socket open and paused). */
function readAll(s: net.Socket, expect: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let n = 0;
    const done = (e?: Error) => {
      s.off('data', onData); s.off('end', onEnd); s.off('error', done);
      s.pause();
      if (e) reject(e); else resolve(Buffer.concat(parts));
    };
    const onData = (chunk: Buffer) => { parts.push(chunk); n += chunk.length; if (n >= expect) done(); };
    const onEnd = () => done();
    s.on('data', onData); s.once('end', onEnd); s.once('error', done);
    s.resume();
  });
}

async function deliveryPeekFionread(): Promise<void> {
  const p = await connectedPair();
  const msg = Buffer.from('sidecar-accel self-test '.repeat(40));
  await new Promise<void>((resolve, reject) => p.client.write(msg, (e) => (e ? reject(e) : resolve())));
  const fd = fdOf(p.server);
  const queued = native().fionread(fd);
  check('fionread', queued === msg.length, `FIONREAD ${queued}, sent ${msg.length}`);
  const peek = native().recvPeek(fd, 16);
  check('peek', peek.equals(msg.subarray(0, 16)), `peeked ${JSON.stringify(peek.toString())}`);
  const got = await readAll(p.server, msg.length);
  check('delivery', got.equals(msg), `read ${got.length} of ${msg.length} bytes`);
  p.close();
}

async function halfClose(): Promise<void> {
  const p = await connectedPair();
  const up = Buffer.alloc(1 << 20, 7);
  const down = Buffer.alloc(300_000, 9);
  p.client.end(up);
  const ended = once(p.server, 'end');
  const gotUp = await readAll(p.server, up.length);
  p.server.resume();
  await ended;
  const clientEnded = once(p.client, 'end');
  p.server.end(down);
  const gotDown = await readAll(p.client, down.length);
  p.client.resume();
  await clientEnded;
  check('half-close', gotUp.equals(up) && gotDown.equals(down), `up ${gotUp.length}/${up.length}, down ${gotDown.length}/${down.length}, both EOFs seen`);
  p.close();
}

async function backpressure(): Promise<void> {
  const p = await connectedPair();
  const sfd = fdOf(p.server);
  const cfd = fdOf(p.client);
  native().setsockoptInt(sfd, SOL_SOCKET, SO_RCVBUF, 128 * 1024);
  native().setsockoptInt(cfd, SOL_SOCKET, SO_SNDBUF, 64 * 1024);
  const rcvbuf = native().getsockoptInt(sfd, SOL_SOCKET, SO_RCVBUF);
  const sndbuf = native().getsockoptInt(cfd, SOL_SOCKET, SO_SNDBUF);
  const block = Buffer.alloc(64 * 1024, 1);
  let accepted = 0;
  // The reader reads nothing: write until the kernel refuses, or give up.
  while (accepted < (256 << 20)) {
    const n = native().sendDontwait(cfd, block);
    if (n < 0) break;
    accepted += n;
  }
  const bound = 2 * rcvbuf + sndbuf;
  check('backpressure', accepted <= bound, `writer got ${accepted} bytes accepted with the reader stalled (bound ${bound}: 2x rcvbuf ${rcvbuf} + sndbuf ${sndbuf})`);
  const got = await readAll(p.server, accepted);
  check('backpressure-delivery', got.length >= accepted, `read back ${got.length} of ${accepted}`);
  p.close();
}

try {
  await learnListener();
  await deliveryPeekFionread();
  await halfClose();
  await backpressure();
} catch (e) {
  check('run', false, (e as Error).message);
}
srv.close();
process.stdout.write(JSON.stringify({ checks }) + '\n');
process.exit(0);
