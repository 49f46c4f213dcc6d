// `sidecar-accel demo`: two Istio-style pods on this machine, the same
// exchange through both sidecars with acceleration off and on, interleaved,
// numbers printed as they come. Everything it builds is removed at the end
// and on Ctrl-C.
import fs from 'node:fs';
import { Datapath } from '../datapath/datapath.js';
import { netnsCookieOfPath } from '../datapath/netns.js';
import { createSidecarPair, APP_PORT, SERVICE_PORT, type SidecarPair } from '../topology/pair.js';
import { SERVICE_VIP4 } from '../topology/topology.js';
import { sweepStaleTopologies } from '../topology/sweep.js';
import type { LineProcess } from '../util/lines.js';
import { startIperfServer, startSockperfServer, iperfStream, sockperfPingPong, type Latency } from '../measure/tools.js';

type Mode = 'iptables' | 'accel' | 'accel-crosspod';

export interface DemoOptions { rounds: number; seconds: number; out: NodeJS.WritableStream }

interface Sample { mode: Mode; lat: Latency; gbps: number; redirected: bigint }

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

export async function runDemo(opts: DemoOptions): Promise<void> {
  const say = (s: string) => opts.out.write(s + '\n');
  if (process.getuid?.() !== 0) throw new Error('the demo builds network namespaces and loads BPF programs: run it as root');
  say('sidecar-accel demo: two pods, HAProxy sidecars as uid 1337 behind Istio\'s REDIRECT rules');
  let pair: SidecarPair | undefined;
  let dp: Datapath | undefined;
  let pinRoot = '';
  const cleanup = async () => {
    try { dp?.uninstall(); } catch { /* already gone */ }
    if (pinRoot) fs.rmSync(pinRoot, { recursive: true, force: true });
    await pair?.topo.destroy();
  };
  const onSignal = () => { say('\ninterrupted: cleaning up'); void cleanup().finally(() => process.exit(130)); };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const swept = await sweepStaleTopologies();
    if (swept.length) say(`removed leftovers of killed runs: ${swept.join(', ')}`);
    pair = await createSidecarPair('demo');
    pinRoot = `/sys/fs/bpf/${pair.topo.prefix}`;
    dp = Datapath.open({ cgroupPath: pair.topo.cgroupDir, pinRoot });
    const cookies = [netnsCookieOfPath(pair.a.netnsPath), netnsCookieOfPath(pair.b.netnsPath)];
    say(`pods ${pair.a.netns} -> ${pair.b.netns}; service ${SERVICE_VIP4}:${SERVICE_PORT} -> app :${APP_PORT}`);
    say(`latency: sockperf ping-pong, 64 B, round trip in us; throughput: iperf3, one stream; ${opts.rounds} interleaved rounds of ${opts.seconds} s\n`);
    const samples: Sample[] = [];
    const modes: Mode[] = ['iptables', 'accel', 'accel-crosspod'];
    say('round  mode             rtt p50    rtt p99    Gbit/s   redirected msgs');
    for (let round = 1; round <= opts.rounds; round++) {
      for (const mode of modes) {
        if (mode === 'iptables') for (const c of cookies) dp.disable(c);
        else for (const c of cookies) dp.enable(c);
        dp.setConfig({ crossPod: mode === 'accel-crosspod', keepaliveIdleSeconds: 0 });
        const before = dp.counters().redirectedMessages;
        const p = pair;
        // The sidecars route to the app port: its servers take turns on it.
        const lat = await withServer(() => startSockperfServer(p.b, APP_PORT),
          () => sockperfPingPong(p.a, SERVICE_VIP4, SERVICE_PORT, opts.seconds, 64));
        const gbps = await withServer(() => startIperfServer(p.b, APP_PORT),
          () => iperfStream(p.a, SERVICE_VIP4, SERVICE_PORT, opts.seconds));
        const redirected = dp.counters().redirectedMessages - before;
        samples.push({ mode, lat, gbps, redirected });
        say(`${String(round).padStart(5)}  ${mode.padEnd(15)} ${lat.p50.toFixed(1).padStart(7)} us ${lat.p99.toFixed(1).padStart(7)} us ${gbps.toFixed(2).padStart(8)}   ${redirected}`);
      }
    }
    say('\nmedians                 rtt p50    rtt p99    Gbit/s   vs iptables (p50, Gbit/s)');
    const base = samples.filter((s) => s.mode === 'iptables');
    for (const mode of modes) {
      const ss = samples.filter((s) => s.mode === mode);
      const p50 = median(ss.map((s) => s.lat.p50));
      const p99 = median(ss.map((s) => s.lat.p99));
      const g = median(ss.map((s) => s.gbps));
      const ratio = `${(p50 / median(base.map((s) => s.lat.p50))).toFixed(2)}x, ${(g / median(base.map((s) => s.gbps))).toFixed(2)}x`;
      say(`       ${mode.padEnd(15)} ${p50.toFixed(1).padStart(7)} us ${p99.toFixed(1).padStart(7)} us ${g.toFixed(2).padStart(8)}   ${ratio}`);
    }
    say('\n(a shared VM is noisy: compare ratios from one run, not numbers across runs)');
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await cleanup();
  }
}

/** Runs fn against a server that is started first and gone (exited) afterwards. */
async function withServer<T>(start: () => Promise<LineProcess>, fn: () => Promise<T>): Promise<T> {
  const server = await start();
  try {
    return await fn();
  } finally {
    server.child.kill('SIGKILL');
    await server.exited;
  }
}
