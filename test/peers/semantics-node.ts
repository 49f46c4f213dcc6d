// The Node client of the semantics matrix (test/kernel/matrix.test.ts):
// the protocol of test/peers/semantics.c (64-byte header, 16-byte ack) and
// its observation keys, for the cases an event-driven Node application
// meets: EOF, half-close from either side, reset from either side.
//
//   client --connect ADDR --case C --id ID
//
// Style "node": libuv's epoll, O_NONBLOCK sockets, allowHalfOpen.
import crypto from 'node:crypto';
import net from 'node:net';

function pattern(off: number, n: number, seed: number): Buffer {
  const w0 = Math.floor(off / 4);
  const w1 = Math.ceil((off + n) / 4);
  const b = Buffer.alloc((w1 - w0) * 4);
  for (let w = w0; w < w1; w++) b.writeUInt32LE((seed + w) >>> 0, (w - w0) * 4);
  return b.subarray(off - 4 * w0, off - 4 * w0 + n);
}

const sha = (b: Buffer) => crypto.createHash('sha256').update(b).digest('hex');

function errname(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  return code ?? (e instanceof Error ? e.message : String(e));
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const opts: Record<string, string> = {};
  for (let i = 1; i < argv.length; i += 2) opts[argv[i]!] = argv[i + 1] ?? '';
  const addr = opts['--connect'] ?? '';
  const name = opts['--case'] ?? '';
  const id = opts['--id'] ?? '0';
  const i = addr.lastIndexOf(':');
  const host = addr.slice(0, i).replace(/^\[|\]$/g, '');
  const port = Number(addr.slice(i + 1));

  const sock = net.connect({ host, port, allowHalfOpen: true });
  let buf = Buffer.alloc(0);
  let end: string | undefined;
  let waiters: (() => boolean)[] = [];
  const wake = () => { waiters = waiters.filter((w) => !w()); };
  sock.on('data', (d: Buffer) => { buf = Buffer.concat([buf, d]); wake(); });
  sock.on('end', () => { end ??= 'eof'; wake(); });
  sock.on('error', (e) => { end ??= errname(e); wake(); });
  sock.on('close', () => { end ??= 'closed'; wake(); });
  const until = (pred: () => boolean) => new Promise<void>((resolve) => {
    const check = () => { if (pred() || end !== undefined) { resolve(); return true; } return false; };
    if (!check()) waiters.push(check);
  });
  const write = (b: Buffer | string) => new Promise<number>((resolve) => {
    sock.write(b, (err) => resolve(err ? -1 : Buffer.byteLength(b)));
  });
  const obs: Record<string, unknown> = {};
  /** Everything after the ack up to EOF or an error, as read_to_end records it. */
  const toEnd = async (pfx: string, from: number) => {
    await until(() => false);
    const d = buf.subarray(from);
    obs[`${pfx}End`] = end === 'closed' ? 'eof' : end;
    obs[`${pfx}Bytes`] = d.length;
    obs[`${pfx}Sha`] = sha(d);
  };

  await new Promise<void>((resolve, reject) => { sock.once('connect', resolve); sock.once('error', reject); });
  const hdr = Buffer.alloc(64, ' ');
  hdr.write(`${name} ${id} ${process.pid}`);
  hdr[63] = 0x0a;
  obs.hdr = await write(hdr);
  await until(() => buf.length >= 16);
  obs.ack = Math.min(buf.length, 16);
  const closed = new Promise<void>((resolve) => sock.once('close', () => resolve()));
  switch (name) {
    case 'probe':
      sock.destroy();
      break;
    case 'eof-s':
      await toEnd('in', 16);
      break;
    case 'eof-c':
      obs.sent = await write(pattern(0, 1000, 2));
      sock.end();
      obs.close = 0;
      break;
    case 'halfclose-c':
      obs.sent = await write(pattern(0, 3000, 3));
      sock.end();
      obs.shutdown = 0;
      await toEnd('reply', 16);
      break;
    case 'halfclose-s':
      await toEnd('in', 16);
      obs.sent = await write(pattern(0, 500, 5));
      sock.end();
      obs.close = 0;
      break;
    case 'rst-c':
      obs.w = await write('w');
      await until(() => buf.length >= 17);
      obs.k = buf.length - 16;
      sock.resetAndDestroy();
      obs.rstClose = 0;
      break;
    case 'rst-s':
      obs.w = await write('w');
      await toEnd('in', 16);
      break;
    default:
      obs.error = 'unknown case';
  }
  // A socket whose peer ended while this side stays open never closes by itself.
  if (!sock.destroyed && !sock.writableEnded) sock.end();
  await closed;
  process.stdout.write(JSON.stringify({ role: 'client', id, case: name, style: 'node', obs }) + '\n');
}

void main().catch((e: unknown) => { process.stderr.write(`semantics-node: ${errname(e)}\n`); process.exit(1); });
