// One loopback hop inside one pod: plain TCP, the same hop redirected, and
// the same exchange over a unix domain socket (the floor no TCP path can
// beat). Latency from the bench's C rr client (64 B, one connection),
// throughput from iperf3 (one stream; unix sockets: none). Rounds interleaved
// (tcp, redirect, uds, tcp, ...) on the same pod, medians and spread printed.
// Run as root after `npm run build`:
//   node dist/bench/one-hop.js [--rounds N] [--seconds S]
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { Datapath } from '../src/datapath/datapath.js';
import { netnsCookieOfPath } from '../src/datapath/netns.js';
import { Topology } from '../lab/topology/topology.js';
import { startIperfServer, iperfStream, rrClient, startRrServer, withServer, type RrAddress } from '../lab/measure/tools.js';
import { median } from './suite/report.js';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '5' }, seconds: { type: 'string', default: '3' } } });
const rounds = Number(values.rounds);
const seconds = Number(values.seconds);
const MODES = ['tcp', 'redirect', 'uds'] as const;

function stats(xs: number[]): string {
  const s = [...xs].sort((a, b) => a - b);
  return `${median(s).toFixed(2)} (min ${s[0]!.toFixed(2)}, max ${s[s.length - 1]!.toFixed(2)})`;
}

const topo = await Topology.create({ label: 'onehop' });
const pinRoot = `/sys/fs/bpf/${topo.prefix}`;
let dp: Datapath | undefined;
try {
  const pod = await topo.addPod('p');
  dp = Datapath.open({ cgroupPath: topo.cgroupDir, pinRoot });
  const cookie = netnsCookieOfPath(pod.netnsPath);
  const res = Object.fromEntries(MODES.map((m) => [m, { gbps: [] as number[], p50: [] as number[], p99: [] as number[] }]));
  console.log(`kernel ${fs.readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim()}, ${rounds} rounds x ${seconds} s, interleaved`);
  for (let r = 1; r <= rounds; r++) {
    for (const mode of MODES) {
      if (mode === 'redirect') dp.enable(cookie); else dp.disable(cookie);
      const c0 = dp.counters();
      const at: RrAddress = mode === 'uds' ? { unix: topo.file('hop.sock') } : { tcp: '127.0.0.1', port: 11111 };
      const gbps = mode === 'uds' ? null
        : await withServer(() => startIperfServer(pod, 5201), () => iperfStream(pod, '127.0.0.1', 5201, seconds));
      const lat = await withServer(() => startRrServer(pod, at), () => rrClient(pod, at, { conns: 1, size: 64, seconds }));
      const c1 = dp.counters();
      const redirected = c1.redirectedMessages - c0.redirectedMessages;
      if ((mode === 'redirect') !== (redirected > 0n)) throw new Error(`round ${r} ${mode}: ${redirected} messages redirected`);
      if (gbps !== null) res[mode]!.gbps.push(gbps);
      res[mode]!.p50.push(lat.p50_us);
      res[mode]!.p99.push(lat.p99_us);
      const bp = c1.fallbackBackpressure - c0.fallbackBackpressure;
      console.log(`round ${r} ${mode.padEnd(8)} ${gbps === null ? '      -     ' : `${gbps.toFixed(2)} Gbit/s`}  rtt p50 ${lat.p50_us.toFixed(2)} us  p99 ${lat.p99_us.toFixed(2)} us  (${redirected} msgs redirected, ${bp} backpressure fallbacks)`);
    }
  }
  for (const mode of MODES) {
    const g = res[mode]!.gbps.length ? `Gbit/s ${stats(res[mode]!.gbps)}; ` : '';
    console.log(`${mode.padEnd(8)} ${g}rtt p50 us ${stats(res[mode]!.p50)}; rtt p99 us ${stats(res[mode]!.p99)}`);
  }
  const m = (mode: typeof MODES[number], k: 'gbps' | 'p50' | 'p99') => median(res[mode]![k]);
  console.log(`redirect / tcp: throughput ${(m('redirect', 'gbps') / m('tcp', 'gbps')).toFixed(2)}x, `
    + `rtt p50 ${(m('redirect', 'p50') / m('tcp', 'p50')).toFixed(2)}x, rtt p99 ${(m('redirect', 'p99') / m('tcp', 'p99')).toFixed(2)}x`);
  console.log(`redirect / uds floor: rtt p50 ${(m('redirect', 'p50') / m('uds', 'p50')).toFixed(2)}x; tcp / uds floor: ${(m('tcp', 'p50') / m('uds', 'p50')).toFixed(2)}x`);
} finally {
  dp?.uninstall();
  fs.rmSync(pinRoot, { recursive: true, force: true });
  await topo.destroy();
}
