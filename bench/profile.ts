// Where the time goes: runs one bench workload per scenario on the bench's
// pods under `perf record -a -g` and prints the hottest symbols of each, so a
// missed goal can be explained from the machine, not guessed. Root, after
// `npm run build`:
//   node dist/bench/profile.js [--workload crr|rr|http|stream] [--seconds S] [--scenarios a,b,...]
//                              [--top N] [--tcp-rmem-max BYTES] [--bpf-stats]
// --tcp-rmem-max raises every bench pod's net.ipv4.tcp_rmem maximum, which is
// also the datapath's bound on what a receiver may hold (I3): a stream run
// with a bound so high it never falls back shows what redirecting alone
// would reach, without TCP's flow control. A measurement, not a setting to
// run with: such a bound lets a writer queue that much kernel memory.
// --bpf-stats measures our programs instead of sampling: it turns
// kernel.bpf_stats_enabled on for the runs (and back off) and prints, per
// accel run, each program's runs per request and time per run. Without it,
// the profile refuses to start while the statistics are on: each program run
// would pay two clock reads that only the accel scenarios carry.
import { parseArgs } from 'node:util';
import fs from 'node:fs';
import { run } from '../src/util/exec.js';
import { createBenchPods } from './suite/pods.js';
import { AgentControl } from './suite/agent-control.js';
import { countersDelta } from '../src/datapath/layout.js';
import { generationDirs } from '../src/datapath/datapath.js';
import { bpfStatsEnabled, pinnedProgramStats, type ProgramRunStats } from '../lab/measure/kernel.js';
import { SCENARIOS, SCENARIO_SPECS, exchangeOf, workloadPoints, type ScenarioName, type WorkloadName } from './suite/scenarios.js';

const USAGE = `usage: node dist/bench/profile.js [--workload crr|rr|http|stream] [--seconds S] [--scenarios a,b,...]
                                [--top N] [--tcp-rmem-max BYTES] [--bpf-stats]
scenarios: ${SCENARIOS.join(', ')}`;

function parse() {
  try {
    return parseArgs({
      options: {
        workload: { type: 'string', default: 'crr' },
        seconds: { type: 'string', default: '4' },
        scenarios: { type: 'string', default: 'istio-iptables,accel,accel-crosspod' },
        top: { type: 'string', default: '25' },
        'tcp-rmem-max': { type: 'string' },
        'bpf-stats': { type: 'boolean', default: false },
        help: { type: 'boolean', default: false },
      },
    }).values;
  } catch (e) {
    console.error(`profile: ${(e as Error).message}\n${USAGE}`);
    process.exit(2);
  }
}
const values = parse();
if (values.help) {
  console.log(USAGE);
  process.exit(0);
}
const fail = (why: string): never => {
  console.error(`profile: ${why}\n${USAGE}`);
  process.exit(2);
};
const point = workloadPoints().find((p) => p.workload === (values.workload as WorkloadName))
  ?? fail(`unknown workload ${values.workload}`);
const scenarios = values.scenarios.split(',') as ScenarioName[];
for (const s of scenarios) if (!SCENARIOS.includes(s)) fail(`unknown scenario ${s}`);
const seconds = Number(values.seconds);
if (!(seconds > 0)) fail(`--seconds wants a positive number, got ${values.seconds}`);
const rmemMax = values['tcp-rmem-max'];
if (rmemMax !== undefined && !/^\d+$/.test(rmemMax)) fail(`--tcp-rmem-max wants a byte count, got ${rmemMax}`);
const statsMode = values['bpf-stats'];
const STATS_SYSCTL = '/proc/sys/kernel/bpf_stats_enabled';
if (statsMode && !fs.existsSync(STATS_SYSCTL)) fail('--bpf-stats: this kernel has no kernel.bpf_stats_enabled');
if (!statsMode && bpfStatsEnabled()) {
  fail('kernel.bpf_stats_enabled is on: every program run pays two clock reads, which only the accel scenarios carry; '
    + 'turn it off (sysctl -w kernel.bpf_stats_enabled=0) or measure the programs with --bpf-stats');
}

// Before any pod exists: without perf there is nothing to profile with.
if (!statsMode) {
  await run('perf', ['--version']).catch(() => fail('perf not found or not runnable; on Debian: apt-get install linux-perf'));
}
const pods = await createBenchPods();
const control = new AgentControl(pods);
const statsWere = statsMode ? fs.readFileSync(STATS_SYSCTL, 'utf8').trim() : '0';
try {
  if (rmemMax !== undefined) {
    for (const p of pods.topo.pods) await p.exec('sysctl', ['-q', '-w', `net.ipv4.tcp_rmem=4096 131072 ${rmemMax}`]);
  }
  if (statsMode) fs.writeFileSync(STATS_SYSCTL, '1');
  for (const name of scenarios) {
    const spec = SCENARIO_SPECS[name];
    if (spec.agent) await control.on(spec.agent.crossPod); else await control.off();
    const data = pods.topo.file(`perf-${name}.data`);
    const ex = exchangeOf(spec, pods);
    await ex.prepare(point);
    const c0 = control.running?.dp.counters();
    const p0 = statsMode ? await programStats() : null;
    const perf = statsMode ? null : run('perf', ['record', '-a', '-g', '-q', '-o', data, '--', 'sleep', String(seconds)]);
    const m = await ex.run(point, seconds);
    await perf;
    const p1 = statsMode ? await programStats() : null;
    const c = c0 && countersDelta(control.running!.dp.counters(), c0);
    const rate = (m.requests === null ? `${m.gbps?.toFixed(2)} Gbit/s` : `${Math.round(m.requests / m.seconds)} req/s`)
      + (c ? ` (redirected ${c.redirectedBytes} B in ${c.redirectedMessages} messages; backpressure fallbacks ${c.fallbackBackpressure}, returns ${c.directionsResumed})` : '');
    if (p0 && p1) {
      console.log(`\n== ${name}, ${point.workload} x${point.conns}: ${rate}`);
      // Per request where there are requests; a stream's unit is a MiB it carried.
      const units = m.requests ?? (m.gbps ?? 0) * 1e9 / 8 * m.seconds / 2 ** 20;
      const per = m.requests === null ? 'MiB' : 'request';
      for (const [prog, after] of p1) {
        const before = p0.get(prog) ?? { runs: 0, ns: 0 };
        const runs = after.runs - before.runs;
        const ns = after.ns - before.ns;
        console.log(`  ${prog.padEnd(14)} ${(runs / units).toFixed(1).padStart(7)} runs a ${per}, `
          + `${runs ? Math.round(ns / runs) : 0} ns a run, ${(ns / units / 1000).toFixed(2)} us a ${per}`);
      }
      if (!p1.size) console.log('  (no program of ours: a baseline)');
      continue;
    }
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
  try {
    if (statsMode) fs.writeFileSync(STATS_SYSCTL, statsWere);
    await control.off();
  } finally {
    await pods.topo.destroy();
  }
}

/** Our programs' statistics, summed over the pinned generations (the agent runs one). */
async function programStats(): Promise<Map<string, ProgramRunStats>> {
  const sum = new Map<string, ProgramRunStats>();
  for (const dir of generationDirs(control.pinRoot)) {
    for (const [prog, st] of await pinnedProgramStats(dir)) {
      const s = sum.get(prog) ?? { runs: 0, ns: 0 };
      sum.set(prog, { runs: s.runs + st.runs, ns: s.ns + st.ns });
    }
  }
  return sum;
}
