// `sidecar-accel bench` / `npm run bench`: every scenario and workload of
// docs/design.md 8 in interleaved rounds, each accel round verified from the
// kernel, each baseline round proven free of our programs; raw JSON, a
// Markdown table and an SVG chart. Everything it builds goes away at the end,
// also on Ctrl-C.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { run } from '../../src/util/exec.js';
import { runCleanly } from '../../lab/harness/interruptible.js';
import { countersDelta } from '../../src/datapath/layout.js';
import { bpfStatsEnabled, cpuTicks, linkTx, tcpDataSegments, tcpOpens } from '../../lab/measure/kernel.js';
import { Progress } from '../../lab/harness/progress.js';
import type { Pod } from '../../lab/topology/topology.js';
import { createBenchPods, type BenchPods } from './pods.js';
import { AgentControl } from './agent-control.js';
import { SCENARIOS, SCENARIO_SPECS, exchangeOf, notApplicable, workloadPoints, type Exchange, type Scenario, type WorkloadPoint } from './scenarios.js';
import { LINK_HEADER_BYTES, hopLinks, judge, type HopTraffic } from './verify.js';
import { aggregate, headlines, markdown, type RawSample, type Report } from './report.js';
import { chartSvg } from './chart.js';

export interface BenchOptions {
  quick: boolean;
  json?: string;
  md?: string;
  chart?: string;
  /** CPU list (taskset syntax) every process of the bench runs on, or none. */
  cpus?: string;
  rounds?: number;
  seconds?: number;
  out: NodeJS.WritableStream & { isTTY?: boolean };
}

const TOOLS: Report['tools'] = {
  rr: 'bench/native/rr.c (C, epoll, one request in flight per connection)',
  http: 'wrk 4.1, one thread, HTTP/1.1 keep-alive',
  crr: 'bench/native/rr.c --crr (C, a connection per request)',
  stream: 'bench/native/rr.c --stream (C, non-blocking writes as fast as the kernel takes them) into its sink (epoll)',
};

export const DEFAULT_OUTPUT = 'bench/results/last-run';

export async function runBench(opts: BenchOptions): Promise<Report> {
  const say = (s: string) => opts.out.write(s + '\n');
  if (process.getuid?.() !== 0) throw new Error('the bench builds network namespaces and loads BPF programs: run it as root');
  const rounds = opts.rounds ?? (opts.quick ? 2 : 5);
  const seconds = opts.seconds ?? (opts.quick ? 1 : 4);
  if (!(rounds >= 1) || !(seconds >= 1)) throw new Error('--rounds and --seconds must be at least 1');
  if (bpfStatsEnabled()) {
    throw new Error('kernel.bpf_stats_enabled is on: each BPF program run then pays two clock reads, which only the accel scenarios carry; turn it off first (sysctl -w kernel.bpf_stats_enabled=0)');
  }
  if (opts.cpus) await run('taskset', ['-a', '-p', '-c', opts.cpus, String(process.pid)]); // children inherit it
  const clkTck = Number((await run('getconf', ['CLK_TCK'])).stdout.trim());

  const progress = new Progress(opts.out);
  let pods: BenchPods | undefined;
  let control: AgentControl | undefined;
  const cleanup = async () => {
    progress.done();
    try { await control?.off(); } finally { await pods?.topo.destroy(); }
  };
  return runCleanly(say, cleanup, async () => {
    say(`sidecar-accel bench${opts.quick ? ' --quick' : ''}: ${rounds} interleaved rounds, ${seconds} s per measurement`);
    pods = await createBenchPods();
    control = new AgentControl(pods);
    await control.off();
    const points = workloadPoints();
    const raw: RawSample[] = [];
    const total = rounds * SCENARIOS.reduce((n, s) => n + points.filter((p) => !notApplicable(s, p.workload)).length, 0);
    say(`pods ready (${pods.topo.prefix}); ${total} measurements, about ${Math.ceil(total * (seconds + 0.7) / 60)} min\n`);
    let done = 0;
    for (let round = 1; round <= rounds; round++) {
      for (const scenario of roundOrder(round)) {
        const spec = SCENARIO_SPECS[scenario];
        if (spec.agent) await control.on(spec.agent.crossPod);
        else await control.off();
        const ex = exchangeOf(spec, pods);
        for (const point of points) {
          if (notApplicable(scenario, point.workload)) continue;
          done++;
          progress.start(`[${done}/${total}] round ${round} ${scenario} ${label(point)}`, seconds);
          const s = await measure({ spec, point, seconds, clkTck, ex, control, round });
          progress.done();
          raw.push(s);
          say(line(s));
        }
      }
    }
    const report: Report = {
      kernel: os.release(), ...(control.kernelMode ? { self_test_mode: control.kernelMode } : {}), cpus: os.cpus().length, cpu_model: os.cpus()[0]?.model ?? 'unknown', date: new Date().toISOString(),
      rounds, seconds_per_measurement: seconds, quick: opts.quick, cpu_pinning: opts.cpus ?? null, tools: TOOLS,
      results: aggregate(raw), raw,
    };
    await writeOutputs(report, opts, say);
    say('\nratios from this run:');
    for (const h of headlines(report.results)) say(`  ${h.what.padEnd(52)} ${h.ratio === null ? '-' : h.ratio.toFixed(2) + 'x'}  (aim ${h.goal})`);
    return report;
  });
}

/**
 * Scenarios of one round: the three without our programs and the three with
 * them, as two groups (the agent starts or stops once between them); which
 * group goes first alternates by round, and the order inside a group rotates.
 */
export function roundOrder(round: number): Scenario['name'][] {
  const rotate = <T>(xs: T[], k: number) => xs.map((_, i) => xs[(i + k) % xs.length]!);
  const off = rotate(SCENARIOS.filter((s) => !SCENARIO_SPECS[s].agent), round);
  const on = rotate(SCENARIOS.filter((s) => SCENARIO_SPECS[s].agent), round);
  return round % 2 ? [...off, ...on] : [...on, ...off];
}

function label(p: WorkloadPoint): string {
  return `${p.workload} x${p.conns}${p.size === null ? '' : ` ${p.size} B`}`;
}

async function sumDataSegments(pods: Pod[]): Promise<number> {
  let n = 0;
  for (const p of pods) n += await tcpDataSegments(p);
  return n;
}

/** What the pods' hop links have sent so far (cumulative). */
async function hopTraffic(pods: Pod[], links: string[]): Promise<Omit<HopTraffic, 'dataSegments'>> {
  let bytes = 0;
  let headerBytes = 0;
  let opens = 0;
  for (const p of pods) {
    if (links.length) opens += await tcpOpens(p);
    for (const dev of links) {
      const t = await linkTx(p, dev);
      bytes += t.bytes;
      headerBytes += t.packets * LINK_HEADER_BYTES[dev]!;
    }
  }
  return { bytes, headerBytes, opens };
}

export interface MeasureInput {
  spec: Scenario;
  point: WorkloadPoint;
  seconds: number;
  /** Clock ticks per second of /proc/stat (getconf CLK_TCK). */
  clkTck: number;
  ex: Exchange;
  control: AgentControl;
  round: number;
}

/** One measurement: the exchange, its CPU time, its TCP segments and the kernel's verdict on it. */
export async function measure({ spec, point, seconds, clkTck, ex, control, round }: MeasureInput): Promise<RawSample> {
  const pods = ex.podsOf(point.workload);
  const agent = control.running;
  const attachedBefore = spec.agent ? null : control.attached();
  await ex.prepare(point);
  const links = spec.agent ? hopLinks(spec.expect) : [];
  const segs0 = spec.path === 'uds' ? 0 : await sumDataSegments(pods);
  const hops0 = await hopTraffic(pods, links);
  const c0 = agent?.dp.counters();
  const cpu0 = cpuTicks();
  const m = await ex.run(point, seconds);
  const cpu1 = cpuTicks();
  const segs1 = spec.path === 'uds' ? 0 : await sumDataSegments(pods);
  const hops1 = await hopTraffic(pods, links);
  const counters = agent && c0 ? countersDelta(agent.dp.counters(), c0) : null;
  const hops: HopTraffic = { bytes: hops1.bytes - hops0.bytes, headerBytes: hops1.headerBytes - hops0.headerBytes, opens: hops1.opens - hops0.opens, dataSegments: segs1 - segs0 };
  const v: { ok: boolean; share: number | null; detail: string } = spec.agent
    ? judge(spec.expect, hops, counters)
    : { ok: attachedBefore === null, share: null, detail: attachedBefore ?? 'no program of ours attached' };
  if (counters?.fallbackBackpressure) v.detail += `; ${counters.fallbackBackpressure} backpressure fallbacks`;
  const requests = m.requests;
  const cpuUs = ((cpu1.busy - cpu0.busy) * 1e6) / clkTck;
  return {
    round, scenario: spec.name, workload: point.workload, conns: point.conns, size: point.size,
    p50_us: m.p50_us, p90_us: m.p90_us, p99_us: m.p99_us,
    rps: requests === null ? null : requests / m.seconds, gbps: m.gbps,
    cpu_us_per_req: requests ? cpuUs / requests : null,
    tcp_data_segs_per_req: requests && spec.path !== 'uds' ? (segs1 - segs0) / requests : null,
    redirected_share: v.share,
    connect_p50_us: m.crr?.connect_p50_us ?? null, request_p50_us: m.crr?.request_p50_us ?? null, close_p50_us: m.crr?.close_p50_us ?? null,
    verified: v.ok, verification: v.detail,
  };
}

function line(s: RawSample): string {
  const lat = s.p50_us === null ? '' : `p50 ${s.p50_us.toFixed(1)} us p99 ${s.p99_us?.toFixed(1)} us `;
  const rate = s.rps === null ? '' : `${Math.round(s.rps)} req/s `;
  const gb = s.gbps === null ? '' : `${s.gbps.toFixed(2)} Gbit/s `;
  const cpu = s.cpu_us_per_req === null ? '' : `cpu ${s.cpu_us_per_req.toFixed(1)} us/req `;
  return `r${s.round} ${s.scenario.padEnd(14)} ${label(s).padEnd(16)} ${lat}${rate}${gb}${cpu}${s.verified ? '' : `DISCARDED: ${s.verification}`}`;
}

async function writeOutputs(report: Report, opts: BenchOptions, say: (s: string) => void): Promise<void> {
  const outputs = opts.json || opts.md || opts.chart
    ? { json: opts.json, md: opts.md, chart: opts.chart }
    : { json: `${DEFAULT_OUTPUT}.json`, md: `${DEFAULT_OUTPUT}.md`, chart: `${DEFAULT_OUTPUT}.svg` };
  const write = (file: string | undefined, text: string) => {
    if (!file) return;
    fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
    fs.writeFileSync(file, text);
    say(`wrote ${file}`);
  };
  write(outputs.json, JSON.stringify(report, null, 2) + '\n');
  write(outputs.md, markdown(report));
  if (outputs.chart) write(outputs.chart, await chartSvg(report));
}
