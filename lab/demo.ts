// `sidecar-accel demo`: two Istio-style pods on this machine and the real
// agent, toggled the way an operator toggles it (the mesh config's
// proxyMetadata.SIDECAR_ACCEL, hot-reloaded from the agent's config file).
// The same exchange runs with acceleration off and on, interleaved, numbers
// printed as they come. Everything is removed at the end and on Ctrl-C.
import fs from 'node:fs';
import pino from 'pino';
import { Agent } from '../src/agent/agent.js';
import { uninstallAll } from '../src/cli/status.js';
import { createSidecarPair, APP_PORT, SERVICE_PORT, type SidecarPair } from './topology/pair.js';
import { SERVICE_VIP4 } from './topology/topology.js';
import { runCleanly } from './harness/interruptible.js';
import { applyAgentConfig } from './harness/apply-config.js';
import { rrClient, rrStream, startAnsweredRr, withServer } from './measure/tools.js';
import { Progress } from './harness/progress.js';

type Mode = 'iptables' | 'accel' | 'accel-crosspod';
const MODES: Mode[] = ['iptables', 'accel', 'accel-crosspod'];

export interface DemoOptions { rounds: number; seconds: number; out: NodeJS.WritableStream & { isTTY?: boolean } }

interface Latency { p50: number; p99: number }
interface Sample { mode: Mode; lat: Latency; gbps: number; redirected: bigint }

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

/** The agent config of the demo: both pods sidecar-injected, switched by the mesh config. */
function demoConfig(pair: SidecarPair, pinRoot: string, port: number, mode: Mode): string {
  // The pod IPs: only a known pod address pairs across pods (accel-crosspod).
  const pod = (name: string, p: SidecarPair['a']) => `  - name: ${name}
    namespace: demo
    netns: ${p.netnsPath}
    ips: [${p.ip4}, "${p.ip6}"]
    annotations: {sidecar.istio.io/status: '{"containers":["istio-proxy"]}'}`;
  return [
    `api: {listen: 127.0.0.1:${port}}`,
    // Scoped to the demo's own cgroup so nothing else on this machine is touched.
    // applications: always: on a kernel where the self-test would pair only the
    // sidecar's sockets, the demo still shows the datapath (and says so).
    `datapath: {cgroup: ${pair.topo.cgroupDir}, requireRootCgroup: false, pinDir: ${pinRoot}, crossPod: ${mode === 'accel-crosspod'}, applications: always}`,
    `mesh: {defaultConfig: {proxyMetadata: {SIDECAR_ACCEL: "${mode !== 'iptables'}"}}}`,
    'workloads:',
    pod('client', pair.a),
    pod('server', pair.b),
    '',
  ].join('\n');
}

export async function runDemo(opts: DemoOptions): Promise<void> {
  const say = (s: string) => opts.out.write(s + '\n');
  if (process.getuid?.() !== 0) throw new Error('the demo builds network namespaces and loads BPF programs: run it as root');
  const progress = new Progress(opts.out);
  let pair: SidecarPair | undefined;
  let agent: Agent | undefined;
  let pinRoot = '';
  const cleanup = async () => {
    progress.done();
    await agent?.stop();
    if (pinRoot && pair) uninstallAll(pinRoot, pair.topo.cgroupDir);
    await pair?.topo.destroy();
  };
  await runCleanly(say, cleanup, async () => {
    say('sidecar-accel demo: two pods, HAProxy sidecars as uid 1337 behind Istio\'s REDIRECT rules');
    pair = await createSidecarPair('demo');
    pinRoot = `/sys/fs/bpf/${pair.topo.prefix}`;
    const cfgFile = pair.topo.file('agent.yaml');
    const logFile = pair.topo.file('agent.log');
    const port = 20000 + Math.floor(Math.random() * 20000);
    fs.writeFileSync(cfgFile, demoConfig(pair, pinRoot, port, 'iptables'));
    agent = await Agent.start(cfgFile, { log: pino({ base: { component: 'sidecar-accel' } }, pino.destination({ dest: logFile, sync: true })) });
    say(`agent up, API on 127.0.0.1:${port}; pods ${pair.a.netns} -> ${pair.b.netns}`);
    say(agent.kernelMode === 'full'
      ? 'kernel self-test: full mode (applications\' event-driven sockets are paired by default)'
      : `kernel self-test: ${agent.kernelMode} mode: by default only the sidecar's own sockets would be paired on this kernel (see ${logFile}); the demo pairs applications' sockets anyway (datapath.applications: always)`);
    say(`service ${SERVICE_VIP4}:${SERVICE_PORT} -> app :${APP_PORT}; the toggle is the mesh config's proxyMetadata.SIDECAR_ACCEL`);
    say(`latency: rr, one connection, 64 B request and response; throughput: rr --stream, one connection; ${opts.rounds} interleaved rounds of ${opts.seconds} s each`);
    say('(the tools are non-blocking, as event-driven applications are; each server answers once before it is measured, as a running server has)\n');
    say('round  mode             rtt p50    rtt p99    Gbit/s   redirected msgs');
    const samples: Sample[] = [];
    const p = pair;
    const a = agent;
    for (let round = 1; round <= opts.rounds; round++) {
      for (const mode of MODES) {
        const enabled = mode !== 'iptables';
        await applyAgentConfig(a, cfgFile, demoConfig(p, pinRoot, port, mode),
          (ws) => ws.length === 2 && ws.every((w) => w.enabled === enabled && w.state !== 'error'));
        const before = a.dp.counters().redirectedMessages;
        progress.start(`round ${round}/${opts.rounds} ${mode}: latency`, opts.seconds);
        // The sidecars route to the app port: its servers take turns on it.
        const service = { tcp: SERVICE_VIP4, port: SERVICE_PORT };
        const listen = { tcp: '0.0.0.0', port: APP_PORT };
        const rr = await withServer(() => startAnsweredRr('server', p.b, listen, p.a, service),
          () => rrClient(p.a, service, { conns: 1, size: 64, seconds: opts.seconds }));
        const lat = { p50: rr.p50_us, p99: rr.p99_us };
        progress.start(`round ${round}/${opts.rounds} ${mode}: throughput`, opts.seconds);
        const gbps = await withServer(() => startAnsweredRr('sink', p.b, listen, p.a, service),
          () => rrStream(p.a, service, opts.seconds));
        progress.done();
        const redirected = a.dp.counters().redirectedMessages - before;
        samples.push({ mode, lat, gbps, redirected });
        say(`${String(round).padStart(5)}  ${mode.padEnd(15)} ${lat.p50.toFixed(1).padStart(7)} us ${lat.p99.toFixed(1).padStart(7)} us ${gbps.toFixed(2).padStart(8)}   ${redirected}`);
      }
    }
    say('\nmedians                 rtt p50    rtt p99    Gbit/s   vs iptables (p50, Gbit/s)');
    const base = samples.filter((s) => s.mode === 'iptables');
    for (const mode of MODES) {
      const ss = samples.filter((s) => s.mode === mode);
      const p50 = median(ss.map((s) => s.lat.p50));
      const p99 = median(ss.map((s) => s.lat.p99));
      const g = median(ss.map((s) => s.gbps));
      const ratio = `${(p50 / median(base.map((s) => s.lat.p50))).toFixed(2)}x, ${(g / median(base.map((s) => s.gbps))).toFixed(2)}x`;
      say(`       ${mode.padEnd(15)} ${p50.toFixed(1).padStart(7)} us ${p99.toFixed(1).padStart(7)} us ${g.toFixed(2).padStart(8)}   ${ratio}`);
    }
    say('\n(a shared VM is noisy: compare ratios from one run, not numbers across runs)');
  });
}
