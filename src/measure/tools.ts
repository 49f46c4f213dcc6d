// Native timed clients (sockperf, iperf3) run inside pods: the numbers come
// from C tools, not from a JavaScript loop whose overhead would hide the gain.
import { LineProcess } from '../util/lines.js';
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
