// One loopback hop inside one pod, sockmap redirect vs plain TCP, measured
// with native tools (iperf3 one stream, sockperf ping-pong 64 B), rounds
// interleaved (TCP, redirect, TCP, redirect, ...) on the same pod, medians
// and spread printed. Run as root after `npm run build`:
//   node dist/bench/one-hop.js [--rounds N] [--seconds S]
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { Datapath } from '../src/datapath/datapath.js';
import { netnsCookieOfPath } from '../src/datapath/netns.js';
import { Topology } from '../src/topology/topology.js';
import { startIperfServer, startSockperfServer, iperfStream, sockperfPingPong } from '../src/measure/tools.js';
import type { LineProcess } from '../src/util/lines.js';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '5' }, seconds: { type: 'string', default: '3' } } });
const rounds = Number(values.rounds);
const seconds = Number(values.seconds);

async function withServer<T>(start: () => Promise<LineProcess>, fn: () => Promise<T>): Promise<T> {
  const s = await start();
  try { return await fn(); } finally { s.child.kill('SIGKILL'); await s.exited; }
}

function stats(xs: number[]): string {
  const s = [...xs].sort((a, b) => a - b);
  const med = s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
  return `${med.toFixed(2)} (min ${s[0]!.toFixed(2)}, max ${s[s.length - 1]!.toFixed(2)})`;
}

const topo = await Topology.create({ label: 'onehop' });
const pinRoot = `/sys/fs/bpf/${topo.prefix}`;
let dp: Datapath | undefined;
try {
  const pod = await topo.addPod('p');
  dp = Datapath.open({ cgroupPath: topo.cgroupDir, pinRoot });
  const cookie = netnsCookieOfPath(pod.netnsPath);
  const res: Record<'tcp' | 'redirect', { gbps: number[]; p50: number[]; p99: number[] }> = {
    tcp: { gbps: [], p50: [], p99: [] }, redirect: { gbps: [], p50: [], p99: [] },
  };
  console.log(`kernel ${fs.readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim()}, ${rounds} rounds x ${seconds} s, interleaved`);
  for (let r = 1; r <= rounds; r++) {
    for (const mode of ['tcp', 'redirect'] as const) {
      if (mode === 'redirect') dp.enable(cookie); else dp.disable(cookie);
      const c0 = dp.counters();
      const before = c0.redirectedMessages;
      const gbps = await withServer(() => startIperfServer(pod, 5201), () => iperfStream(pod, '127.0.0.1', 5201, seconds));
      const lat = await withServer(() => startSockperfServer(pod, 11111),
        () => sockperfPingPong(pod, '127.0.0.1', 11111, seconds, 64));
      const redirected = dp.counters().redirectedMessages - before;
      if ((mode === 'redirect') !== (redirected > 0n)) throw new Error(`round ${r} ${mode}: ${redirected} messages redirected`);
      res[mode].gbps.push(gbps);
      res[mode].p50.push(lat.p50);
      res[mode].p99.push(lat.p99);
      const bp = dp.counters().fallbackBackpressure - c0.fallbackBackpressure;
      console.log(`round ${r} ${mode.padEnd(8)} ${gbps.toFixed(2)} Gbit/s  rtt p50 ${lat.p50.toFixed(2)} us  p99 ${lat.p99.toFixed(2)} us  (${redirected} msgs redirected, ${bp} backpressure fallbacks)`);
    }
  }
  for (const mode of ['tcp', 'redirect'] as const) {
    console.log(`${mode.padEnd(8)} Gbit/s ${stats(res[mode].gbps)}; rtt p50 us ${stats(res[mode].p50)}; rtt p99 us ${stats(res[mode].p99)}`);
  }
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  console.log(`redirect / tcp: throughput ${(med(res.redirect.gbps) / med(res.tcp.gbps)).toFixed(2)}x, `
    + `rtt p50 ${(med(res.redirect.p50) / med(res.tcp.p50)).toFixed(2)}x, rtt p99 ${(med(res.redirect.p99) / med(res.tcp.p99)).toFixed(2)}x`);
} finally {
  dp?.uninstall();
  fs.rmSync(pinRoot, { recursive: true, force: true });
  await topo.destroy();
}
