// Native timed clients (sockperf, iperf3, wrk, the bench's own rr) run inside
// pods: the numbers come from C tools, not from a JavaScript loop whose
// overhead would hide the gain.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { LineProcess } from '../../src/util/lines.js';
import type { Pod } from '../topology/topology.js';

export interface Latency { p50: number; p90: number; p99: number; avg: number; messages: number }

/** A sockperf TCP server; resolves once it blocks on its listening socket. */
export async function startSockperfServer(pod: Pod, port: number): Promise<LineProcess> {
  // SO_REUSEADDR: servers take turns on one port, and the last one's closed
  // connections may still sit in TIME_WAIT on it.
  const p = new LineProcess(pod.spawn('sockperf', ['server', '--tcp', '--uc-reuseaddr', '-i', '0.0.0.0', '-p', String(port)]));
  await p.waitForLine((l) => l.includes('to block on socket'), 'sockperf server ready');
  return p;
}

/**
 * sockperf ping-pong: one connection, one message in flight. Latencies are
 * sockperf's: half the round trip, in microseconds.
 */
export async function sockperfPingPong(pod: Pod, host: string, port: number, seconds: number, size: number): Promise<Latency> {
  const p = new LineProcess(pod.spawn('sockperf', ['ping-pong', '--tcp', '-i', host, '-p', String(port),
    '-t', String(seconds), '-m', String(size), '--full-rtt']));
  const lines = await p.done();
  const pct = (q: string) => {
    const l = lines.find((x) => x.includes(`percentile ${q} =`));
    if (!l) throw new Error(`sockperf printed no ${q} percentile:\n${lines.join('\n')}`);
    return Number(l.split('=')[1]);
  };
  const avg = Number(/avg-(?:rtt|latency)=([\d.]+)/.exec(lines.join('\n'))?.[1] ?? NaN);
  const messages = Number(/ReceivedMessages=(\d+)/.exec(lines.join('\n'))?.[1] ?? 0);
  return { p50: pct('50.000'), p90: pct('90.000'), p99: pct('99.000'), avg, messages };
}

/** An iperf3 server; resolves once it listens. */
export async function startIperfServer(pod: Pod, port: number): Promise<LineProcess> {
  const p = new LineProcess(pod.spawn('iperf3', ['-s', '-p', String(port), '--forceflush']));
  await p.waitForLine((l) => l.includes('Server listening'), 'iperf3 server ready');
  return p;
}

/** iperf3 bulk throughput of one stream, in Gbit/s as received. */
export async function iperfStream(pod: Pod, host: string, port: number, seconds: number): Promise<number> {
  const p = new LineProcess(pod.spawn('iperf3', ['-c', host, '-p', String(port), '-t', String(seconds), '-J']));
  const out = (await p.done()).join('\n');
  const j = JSON.parse(out) as { end?: { sum_received?: { bits_per_second?: number } }; error?: string };
  const bps = j.end?.sum_received?.bits_per_second;
  if (bps === undefined) throw new Error(`iperf3 gave no result: ${j.error ?? out.slice(0, 500)}`);
  return bps / 1e9;
}

/** Runs fn against a server that is started first and gone (exited) afterwards. */
export async function withServer<T>(start: () => Promise<LineProcess>, fn: () => Promise<T>): Promise<T> {
  const server = await start();
  try {
    return await fn();
  } finally {
    server.child.kill('SIGKILL');
    await server.exited;
  }
}

/** Where the rr tool connects or listens. */
export type RrAddress = { tcp: string; port: number } | { unix: string };

const RR_BIN = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../../build/bench/rr');

function rrAddressArgs(a: RrAddress): string[] {
  return 'unix' in a ? ['unix', a.unix] : ['tcp', a.tcp, String(a.port)];
}

/** The bench's echo server (build/bench/rr, from bench/native/rr.c); resolves once it listens. */
export async function startRrServer(pod: Pod, at: RrAddress): Promise<LineProcess> {
  const p = new LineProcess(pod.spawn(RR_BIN, ['server', ...rrAddressArgs(at)]));
  await p.waitForLine((l) => l === 'ready', 'rr server ready');
  return p;
}

export interface RrResult {
  requests: number; seconds: number; p50_us: number; p90_us: number; p99_us: number; errors: number;
  /** crr only: the median of each part of a connection's time (rr.c). */
  connect_p50_us?: number; request_p50_us?: number; close_p50_us?: number;
}

/**
 * rr client: `conns` connections with one `size`-byte request in flight each;
 * with `crr`, a fresh connection per request (latency includes the connect).
 */
export async function rrClient(pod: Pod, to: RrAddress, o: { conns: number; size: number; seconds: number; crr?: boolean }): Promise<RrResult> {
  const p = new LineProcess(pod.spawn(RR_BIN, ['client', ...rrAddressArgs(to), '-c', String(o.conns), '-s', String(o.size),
    '-t', String(o.seconds), ...(o.crr ? ['--crr'] : [])]));
  const lines = await p.done();
  const last = lines.at(-1) ?? '';
  try {
    return JSON.parse(last) as RrResult;
  } catch {
    throw new Error(`rr client printed no result: ${lines.join('\n').slice(0, 500)} ${p.stderr.slice(0, 500)}`);
  }
}

/** rr's sink: reads and discards, answering each connection's EOF with its byte count. */
export async function startRrSink(pod: Pod, at: RrAddress): Promise<LineProcess> {
  const p = new LineProcess(pod.spawn(RR_BIN, ['sink', ...rrAddressArgs(at)]));
  await p.waitForLine((l) => l === 'ready', 'rr sink ready');
  return p;
}

/**
 * An rr server (or sink) that has answered once, from `client` to `to`, as a
 * running server has: sidecar-accel pairs an application's accepted sockets
 * once their listener was seen reading non-blocking (I6 in bpf/). Stopped
 * again if that first exchange fails.
 */
export async function startAnsweredRr(kind: 'server' | 'sink', server: Pod, at: RrAddress, client: Pod, to: RrAddress): Promise<LineProcess> {
  const p = kind === 'server' ? await startRrServer(server, at) : await startRrSink(server, at);
  try {
    if (kind === 'server') await rrClient(client, to, { conns: 1, size: 1, seconds: 0.05 });
    else await rrStream(client, to, 0.05);
  } catch (e) {
    p.child.kill('SIGKILL');
    throw e;
  }
  return p;
}

/** One non-blocking bulk stream to an rr sink for `seconds`; Gbit/s as the sink counted it. */
export async function rrStream(pod: Pod, to: RrAddress, seconds: number): Promise<number> {
  const p = new LineProcess(pod.spawn(RR_BIN, ['client', ...rrAddressArgs(to), '-t', String(seconds), '--stream']));
  const lines = await p.done();
  const r = JSON.parse(lines.at(-1) ?? '{}') as { gbps?: number };
  if (typeof r.gbps !== 'number') throw new Error(`rr --stream printed no result: ${lines.join('\n').slice(0, 500)} ${p.stderr.slice(0, 500)}`);
  return r.gbps;
}

export interface WrkResult { requests: number; seconds: number; p50_us: number; p90_us: number; p99_us: number }

/** "123.45us" / "1.20ms" / "2.00s" as microseconds. */
function wrkDuration(s: string): number {
  const m = /^([\d.]+)(us|ms|s)$/.exec(s);
  if (!m) throw new Error(`wrk printed an unreadable latency: ${s}`);
  return Number(m[1]) * (m[2] === 'us' ? 1 : m[2] === 'ms' ? 1e3 : 1e6);
}

/** One HTTP GET with curl from a pod; fails unless the answer is a 2xx. */
export async function httpGet(pod: Pod, url: string): Promise<void> {
  const p = new LineProcess(pod.spawn('curl', ['-sS', '-f', '-o', '/dev/null', '-w', '%{http_code}\n', url]));
  const lines = await p.done();
  if (!/^2\d\d$/.test(lines.at(-1) ?? '')) throw new Error(`GET ${url} answered ${lines.join(' ')}`);
}

/** wrk, HTTP/1.1 keep-alive, one thread and `conns` connections, with its latency distribution. */
export async function wrkHttp(pod: Pod, url: string, conns: number, seconds: number): Promise<WrkResult> {
  const p = new LineProcess(pod.spawn('wrk', ['-t', '1', '-c', String(conns), '-d', `${seconds}s`, '--latency', url]));
  return parseWrk((await p.done()).join('\n'));
}

/** wrk's report (with --latency); errors of any kind fail the measurement. */
export function parseWrk(text: string): WrkResult {
  if (/Non-2xx|Socket errors/.test(text)) throw new Error(`wrk saw errors:\n${text}`);
  const pct = (q: string) => {
    const m = new RegExp(`^\\s*${q}%\\s+(\\S+)`, 'm').exec(text);
    if (!m) throw new Error(`wrk printed no ${q}% latency:\n${text}`);
    return wrkDuration(m[1]!);
  };
  const total = /(\d+) requests in ([\d.]+)(ms|s|m)\b/.exec(text);
  if (!total) throw new Error(`wrk printed no request count:\n${text}`);
  const secs = Number(total[2]) * (total[3] === 'ms' ? 1e-3 : total[3] === 'm' ? 60 : 1);
  return { requests: Number(total[1]), seconds: secs, p50_us: pct('50'), p90_us: pct('90'), p99_us: pct('99') };
}
