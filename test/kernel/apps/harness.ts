// Running real applications in the mesh fixture's pods: commands to
// completion (bounded, a hang is a result), long-lived servers (ready on an
// event: a log line or a connect that succeeds), the ON/OFF comparison of a
// scenario with the kernel's counters of the ON run, and ss samples per hop
// while connections are held open.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { setTimeout as delay } from 'node:timers/promises';
import type { ChildProcess } from 'node:child_process';
import type { Mesh } from '../mesh.js';
import { APP_PORT } from '../mesh.js';
import type { Pod } from '../../../lab/topology/topology.js';
import { SERVICE_VIP4 } from '../../../lab/topology/topology.js';
import { ssSockets, addr, type SsSocket } from '../../../lab/measure/kernel.js';
import { countersDelta, COUNTER_NAMES, type CounterName, type Counters } from '../../../src/datapath/layout.js';

/** What a command run to completion showed: a timeout is an outcome, not a throw. */
export interface Outcome {
  code: number | null;
  signal: string | null;
  timedOut: boolean;
  stdout: string;
  stderr: string;
  ms: number;
}

/**
 * Runs a command in a pod to its end (pod.spawn: the pod's cgroup holds it
 * and the fixture kills it); after timeoutMs it is killed and the outcome
 * says so.
 */
export function runIn(pod: Pod, cmd: string, args: string[], timeoutMs: number): Promise<Outcome> {
  const t0 = performance.now();
  const child = pod.spawn(cmd, args);
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout!.on('data', (d: Buffer) => out.push(d));
  child.stderr!.on('data', (d: Buffer) => err.push(d));
  let timedOut = false;
  const timer = setTimeout(() => { timedOut = true; child.kill('SIGKILL'); }, timeoutMs);
  return new Promise((resolve, reject) => {
    child.on('error', (e) => { clearTimeout(timer); reject(e); });
    // 'close': the process exited and its output is all read.
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({
        code, signal, timedOut,
        stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'),
        ms: Math.round(performance.now() - t0),
      });
    });
  });
}

/** Runs a bash script in a pod ("$1".. are args). */
export function bashIn(pod: Pod, script: string, args: string[], timeoutMs: number): Promise<Outcome> {
  return runIn(pod, 'bash', ['-c', script, 'bash', ...args], timeoutMs);
}

/** Throws with the command's output unless it exited 0 in time. */
export function ok(o: Outcome, what: string): Outcome {
  if (o.code !== 0 || o.timedOut) {
    throw new Error(`${what}: exit ${o.code}${o.signal ? ` (${o.signal})` : ''}${o.timedOut ? ' after timeout' : ''}: ${o.stderr.slice(-1500)} ${o.stdout.slice(-500)}`);
  }
  return o;
}

/** A long-lived process in a pod (a server); its stdout and stderr are kept as text. */
export class Server {
  private text = '';
  private readonly waiters: { re: RegExp; resolve: () => void }[] = [];
  readonly exited: Promise<{ code: number | null; signal: string | null }>;

  constructor(readonly name: string, readonly child: ChildProcess) {
    const take = (d: Buffer) => {
      this.text += d.toString('utf8');
      if (this.text.length > 1 << 20) this.text = this.text.slice(-(1 << 19));
      for (const w of [...this.waiters]) {
        if (w.re.test(this.text)) { this.waiters.splice(this.waiters.indexOf(w), 1); w.resolve(); }
      }
    };
    child.stdout!.on('data', take);
    child.stderr!.on('data', take);
    this.exited = new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
  }

  static start(pod: Pod, name: string, cmd: string, args: string[]): Server {
    return new Server(name, pod.spawn(cmd, args));
  }

  get output(): string {
    return this.text;
  }

  /** Resolves when its output matches re (seen or to come); rejects if it exits first. */
  waitForOutput(re: RegExp, timeoutMs: number): Promise<void> {
    if (re.test(this.text)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.name}: no ${re} within ${timeoutMs} ms: ${this.text.slice(-1500)}`)), timeoutMs);
      this.waiters.push({ re, resolve: () => { clearTimeout(timer); resolve(); } });
      void this.exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`${this.name} exited (${code ?? signal}) before ${re}: ${this.text.slice(-1500)}`));
      });
    });
  }

  /** Resolves once a connect to 127.0.0.1:port in the pod succeeds; rejects if the server exits first. */
  async waitForPort(pod: Pod, port: number, timeoutMs: number): Promise<void> {
    const probe = runIn(pod, 'python3', ['-c', CONNECT_PROBE, String(port), String(timeoutMs / 1000)], timeoutMs + 5000);
    const died = this.exited.then(({ code, signal }) => {
      throw new Error(`${this.name} exited (${code ?? signal}) before listening on ${port}: ${this.text.slice(-1500)}`);
    });
    const o = await Promise.race([probe, died]);
    ok(o, `${this.name}: port ${port} never accepted a connect`);
  }

  /** Stops it with `signal` and waits for its exit (SIGKILL if it has not exited after graceMs). */
  async stop(signal: NodeJS.Signals = 'SIGTERM', graceMs = 10_000): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}

// A connect to the port, retried until it succeeds: the server's
// "listening" event as seen from outside it.
const CONNECT_PROBE = `
import socket, sys, time
port, deadline = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])
while True:
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", port))
        sys.exit(0)
    except OSError:
        if time.monotonic() > deadline:
            sys.exit(1)
    finally:
        s.close()
    time.sleep(0.02)
`;

/** Each hop's sockets (ESTAB) summed, as ss -tni reports them. */
export interface HopStats {
  hop: string;
  end: 'client' | 'server';
  sockets: number;
  dataSegsOut: number;
  bytesSent: number;
}

function port(a: string): number {
  return Number(a.slice(a.lastIndexOf(':') + 1));
}
function host(a: string): string {
  const x = addr(a);
  return x.slice(0, x.lastIndexOf(':'));
}

async function hopStats(m: Mesh): Promise<{ appToVip: number; hops: HopStats[] }> {
  const inA = (await ssSockets(m.a)).filter((s) => s.state === 'ESTAB');
  const inB = (await ssSockets(m.b)).filter((s) => s.state === 'ESTAB');
  const sum = (hop: string, end: 'client' | 'server', list: SsSocket[], pred: (s: SsSocket) => boolean): HopStats => {
    const f = list.filter(pred);
    return {
      hop, end, sockets: f.length,
      dataSegsOut: f.reduce((n, s) => n + s.dataSegsOut, 0), bytesSent: f.reduce((n, s) => n + s.bytesSent, 0),
    };
  };
  const hops = [
    sum('app -> VIP -> 15001', 'client', inA, (s) => host(s.peer) === SERVICE_VIP4 && port(s.peer) === 80),
    sum('app -> VIP -> 15001', 'server', inA, (s) => port(s.local) === 15001),
    sum('sidecar a -> sidecar b 15006', 'client', inA, (s) => host(s.peer) === m.b.ip4 && port(s.peer) === APP_PORT),
    sum('sidecar a -> sidecar b 15006', 'server', inB, (s) => port(s.local) === 15006),
    sum('15006 -> app from 127.0.0.6', 'client', inB, (s) => host(s.local) === '127.0.0.6' && port(s.peer) === APP_PORT),
    sum('15006 -> app from 127.0.0.6', 'server', inB, (s) => port(s.local) === APP_PORT && host(s.peer) === '127.0.0.6'),
  ];
  return { appToVip: hops[0]!.sockets, hops };
}

/**
 * While `running` has not settled, samples the pods' sockets until `want`
 * client connections to the VIP are established, then returns each hop's
 * kernel counters at that moment (null if the client ended first). This is
 * a measurement taken while the client holds its connections, not a
 * synchronisation: the poll interval only spaces the samples.
 */
export async function sampleHops(m: Mesh, running: Promise<unknown>, want: number): Promise<HopStats[] | null> {
  let settled = false;
  void running.finally(() => { settled = true; }).catch(() => {});
  while (!settled) {
    const s = await hopStats(m);
    if (s.appToVip >= want) return s.hops;
    await delay(30);
  }
  return null;
}

/** What one run of a scenario recorded besides its result: per-hop samples by step. */
export interface RunContext {
  mode: 'on' | 'off';
  hops: Record<string, HopStats[] | null>;
}

function nonzero(c: Counters): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of COUNTER_NAMES) if (c[k] !== 0n) out[k] = String(c[k]);
  return out;
}

function hopLine(h: HopStats[] | null): string {
  if (!h) return 'not sampled (connections closed before a sample)';
  return h.map((x) => `${x.hop} ${x.end}: ${x.sockets} sk data_segs_out=${x.dataSegsOut} bytes_sent=${x.bytesSent}`).join('; ');
}

export interface OnOffResult<T> {
  on: T;
  off: T;
  onMs: number;
  offMs: number;
  /** Per-netns counter gains of the ON run. */
  deltaA: Counters;
  deltaB: Counters;
  onHops: Record<string, HopStats[] | null>;
}

/**
 * Runs a scenario twice: first with acceleration OFF (a clean baseline),
 * then ON (both pods enabled, cross-pod pairing on in the mesh config), and
 * records the ON run's per-netns counter gains. The caller asserts the
 * results are deeply equal. The datapath is disabled again whatever happens.
 */
export interface OnOffOptions {
  /**
   * Run right after enabling, before the ON run is counted: one request that
   * makes the server send, as a server has done before it meets a client.
   * The datapath registers an application's accepted sockets once their
   * listener was seen reading non-blocking (I6 in bpf/).
   */
  warmup?: () => Promise<unknown>;
}

export async function onOff<T>(m: Mesh, scenario: string, body: (ctx: RunContext) => Promise<T>, opts: OnOffOptions = {}): Promise<OnOffResult<T>> {
  m.dp.disable(m.cookieA);
  m.dp.disable(m.cookieB);
  const offCtx: RunContext = { mode: 'off', hops: {} };
  let t0 = performance.now();
  const off = await body(offCtx);
  const offMs = Math.round(performance.now() - t0);

  const onCtx: RunContext = { mode: 'on', hops: {} };
  let on: T;
  let onMs: number;
  let deltaA: Counters;
  let deltaB: Counters;
  m.dp.enable(m.cookieA);
  m.dp.enable(m.cookieB);
  try {
    await opts.warmup?.();
    const beforeA = m.dp.netnsCounters(m.cookieA)!;
    const beforeB = m.dp.netnsCounters(m.cookieB)!;
    t0 = performance.now();
    on = await body(onCtx);
    onMs = Math.round(performance.now() - t0);
    deltaA = countersDelta(m.dp.netnsCounters(m.cookieA)!, beforeA);
    deltaB = countersDelta(m.dp.netnsCounters(m.cookieB)!, beforeB);
  } finally {
    m.dp.disable(m.cookieA);
    m.dp.disable(m.cookieB);
  }
  console.log(`apps[${scenario}] ON ${onMs} ms, OFF ${offMs} ms; ON counters pod a ${JSON.stringify(nonzero(deltaA))} pod b ${JSON.stringify(nonzero(deltaB))}`);
  for (const [step, h] of Object.entries(onCtx.hops)) console.log(`apps[${scenario}] ss ON  ${step}: ${hopLine(h)}`);
  for (const [step, h] of Object.entries(offCtx.hops)) console.log(`apps[${scenario}] ss OFF ${step}: ${hopLine(h)}`);
  return { on, off, onMs, offMs, deltaA, deltaB, onHops: onCtx.hops };
}

const APP_HOP_LEFT_ALONE: CounterName[] = ['fallbackBlocking', 'fallbackUnknownReader', 'fallbackTurnedBlocking'];

/**
 * Event-driven server and client: both pods paired, the server's sockets
 * never left alone for their reader, and the held connections' sockets sent
 * no TCP data. (A client tool may open a blocking side connection, such as
 * redis-benchmark's CONFIG GET or wrk's first connect: left alone, counted.)
 */
export function assertAccelerated<T>(scenario: string, r: OnOffResult<T>): void {
  for (const [pod, d] of [['a', r.deltaA], ['b', r.deltaB]] as const) {
    assert.ok(d.socketsPaired > 0n && d.redirectedMessages > 0n, `${scenario}: nothing paired in pod ${pod}`);
  }
  for (const k of APP_HOP_LEFT_ALONE) assert.equal(r.deltaB[k], 0n, `${scenario}: the server's sockets were left alone (${k})`);
  for (const [step, hops] of Object.entries(r.onHops)) {
    for (const h of hops ?? []) assert.equal(h.dataSegsOut, 0, `${scenario} ${step}: ${h.hop} ${h.end} sent ${h.dataSegsOut} TCP data segments`);
  }
}

/**
 * A blocking application on one end: its hop is left alone and counted so in
 * its pod, while the sidecar-to-sidecar hop is still redirected in both.
 */
export function assertAppLeftAlone<T>(scenario: string, r: OnOffResult<T>, pods: ('a' | 'b')[]): void {
  for (const pod of pods) {
    const d = pod === 'a' ? r.deltaA : r.deltaB;
    assert.ok(APP_HOP_LEFT_ALONE.some((k) => d[k] > 0n), `${scenario}: pod ${pod}'s blocking application was not left alone: ${JSON.stringify(nonzero(d))}`);
  }
  assert.ok(r.deltaA.redirectedMessages > 0n && r.deltaB.redirectedMessages > 0n, `${scenario}: the sidecar hop was not redirected`);
}

/** Asserts ON and OFF saw the same thing, printing both when not. */
export function assertSame<T>(scenario: string, r: OnOffResult<T>): void {
  assert.deepEqual(r.on, r.off, `${scenario}: the application saw something different with acceleration ON`);
}

/** The sha256 of a file, hex. */
export async function sha256File(file: string): Promise<string> {
  const h = crypto.createHash('sha256');
  for await (const chunk of fs.createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}
