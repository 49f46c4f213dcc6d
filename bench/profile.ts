// Where the time goes: runs one bench workload per scenario on the bench's
// pods under `perf record -a -g` and prints the hottest symbols of each, so a
// missed goal can be explained from the machine, not guessed. Root, after
// `npm run build`:
//   node dist/bench/profile.js [--workload crr|rr|http|stream] [--seconds S] [--scenarios a,b,...]
//                              [--tcp-rmem-max BYTES]
// --tcp-rmem-max raises every bench pod's net.ipv4.tcp_rmem maximum, which is
// also the datapath's bound on what a receiver may hold (I3): a stream run
// with a bound so high it never falls back shows what redirecting alone
// would reach, without TCP's flow control. A measurement, not a setting to
// run with: such a bound lets a writer queue that much kernel memory.
import { parseArgs } from 'node:util';
import { run } from '../src/util/exec.js';
import { createBenchPods } from './suite/pods.js';
import { AgentControl } from './suite/agent-control.js';
import { countersDelta } from '../src/datapath/layout.js';
import { SCENARIOS, SCENARIO_SPECS, exchangeOf, workloadPoints, type ScenarioName, type WorkloadName } from './suite/scenarios.js';

const { values } = parseArgs({
  options: {
    workload: { type: 'string', default: 'crr' },
    seconds: { type: 'string', default: '4' },
    scenarios: { type: 'string', default: 'istio-iptables,accel,accel-crosspod' },
    top: { type: 'string', default: '25' },
    'tcp-rmem-max': { type: 'string' },
  },
});
const point = workloadPoints().find((p) => p.workload === (values.workload as WorkloadName));
if (!point) throw new Error(`unknown workload ${values.workload}`);
const scenarios = values.scenarios.split(',') as ScenarioName[];
for (const s of scenarios) if (!SCENARIOS.includes(s)) throw new Error(`unknown scenario ${s}`);
const seconds = Number(values.seconds);
const rmemMax = values['tcp-rmem-max'];
if (rmemMax !== undefined && !/^\d+$/.test(rmemMax)) throw new Error(`--tcp-rmem-max wants a byte count, got ${rmemMax}`);

// Before any pod exists: without perf there is nothing to profile with.
await run('perf', ['--version']).catch(() => {
  console.error('profile: perf not found or not runnable; on Debian: apt-get install linux-perf');
  process.exit(2);
});
const pods = await createBenchPods();
const control = new AgentControl(pods);
try {
  if (rmemMax !== undefined) {
    for (const p of pods.topo.pods) await p.exec('sysctl', ['-q', '-w', `net.ipv4.tcp_rmem=4096 131072 ${rmemMax}`]);
  }
  for (const name of scenarios) {
    const spec = SCENARIO_SPECS[name];
    if (spec.agent) await control.on(spec.agent.crossPod); else await control.off();
    const data = pods.topo.file(`perf-${name}.data`);
    const ex = exchangeOf(spec, pods);
    await ex.prepare(point);
    const c0 = control.running?.dp.counters();
    const perf = run('perf', ['record', '-a', '-g', '-q', '-o', data, '--', 'sleep', String(seconds)]);
    const m = await ex.run(point, seconds);
    await perf;
    const c = c0 && countersDelta(control.running!.dp.counters(), c0);
    const rate = (m.requests === null ? `${m.gbps?.toFixed(2)} Gbit/s` : `${Math.round(m.requests / m.seconds)} req/s`)
      + (c ? ` (redirected ${c.redirectedBytes} B in ${c.redirectedMessages} messages; backpressure fallbacks ${c.fallbackBackpressure}, returns ${c.directionsResumed})` : '');
    const report = await run('perf', ['report', '-i', data, '--stdio', '--no-children', '--sort', 'sym', '--percent-limit', '0.01', '-g', 'none']);
    const rows = report.stdout.split('\n').filter((l) => /^\s+[\d.]+%/.test(l))
      .map((l) => ({ line: l, pct: Number(/([\d.]+)%/.exec(l)![1]), sym: l.trim().split(/\s+/).pop()! }));
    // The guest's idle loop is not work; shares below are of the busy samples.
    const idle = (sym: string) => /halt|irq_enable|idle|cpuidle|default_idle/.test(sym);
    const busy = rows.filter((r) => !idle(r.sym));
    const total = busy.reduce((a, r) => a + r.pct, 0);
    const ours = busy.filter((r) => /sk_psock|sock_map|sock_hash|tcp_bpf|bpf_|sk_msg|sk_storage|sockops/.test(r.sym));
    const share = (xs: typeof rows) => (100 * xs.reduce((a, r) => a + r.pct, 0) / total).toFixed(1);
    console.log(`\n== ${name}, ${point.workload} x${point.conns}: ${rate}; busy ${total.toFixed(1)}% of the samples; `
      + `sockmap/BPF symbols ${share(ours)}% of the busy ones`);
    for (const r of busy.slice(0, Number(values.top))) console.log(`  ${(100 * r.pct / total).toFixed(2).padStart(6)}%  ${r.sym}`);
    if (ours.length) console.log(`  sockmap/BPF: ${ours.slice(0, 12).map((r) => `${r.sym} ${(100 * r.pct / total).toFixed(2)}%`).join(', ')}`);
  }
} finally {
  try { await control.off(); } finally { await pods.topo.destroy(); }
}
