// From raw per-round samples to the published result: medians over the rounds
// the kernel verified, spread (min..max), ratios against istio-iptables and
// the unix-socket floor, a Markdown table.
import type { ScenarioName, WorkloadName } from './scenarios.js';
import { SCENARIOS, SCENARIO_SPECS } from './scenarios.js';

/** Which measurement: scenario, workload, connections, message size (null where none). */
export interface PointOf { scenario: ScenarioName; workload: WorkloadName; conns: number; size: number | null }

/** What a measurement yields, or the medians of those; null where the workload has none. */
export interface Metrics {
  p50_us: number | null;
  p90_us: number | null;
  p99_us: number | null;
  rps: number | null;
  gbps: number | null;
  cpu_us_per_req: number | null;
  /** TCP segments that advanced the sequence (data or FIN; nstat TcpExtTCPOrigDataSent of the exchange's pods) per request. */
  tcp_data_segs_per_req: number | null;
  /** Of the bytes on the hops the scenario expects redirected, the share the programs redirected (accel scenarios). */
  redirected_share: number | null;
  /** crr: medians of a connection's parts (CrrPhases); null for the other workloads. */
  connect_p50_us: number | null;
  request_p50_us: number | null;
  close_p50_us: number | null;
}

export interface RawSample extends PointOf, Metrics {
  round: number;
  verified: boolean;
  verification: string;
}

export interface Result extends PointOf, Metrics {
  rounds_used: number;
  rounds_discarded: number;
  /** min..max over the rounds used, of the metric that matters for the workload. */
  spread: { p50_us: [number, number] | null; rps: [number, number] | null; gbps: [number, number] | null };
}

export interface Report {
  kernel: string;
  /** The agent's self-test verdict here; the accel scenarios pair applications' sockets whatever it is. */
  self_test_mode?: string;
  cpus: number;
  cpu_model: string;
  date: string;
  rounds: number;
  seconds_per_measurement: number;
  quick: boolean;
  cpu_pinning: string | null;
  tools: Record<WorkloadName, string>;
  results: Result[];
  raw: RawSample[];
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

const METRICS = ['p50_us', 'p90_us', 'p99_us', 'rps', 'gbps', 'cpu_us_per_req', 'tcp_data_segs_per_req', 'redirected_share',
  'connect_p50_us', 'request_p50_us', 'close_p50_us'] as const;

function range(xs: number[]): [number, number] | null {
  return xs.length ? [Math.min(...xs), Math.max(...xs)] : null;
}

export function aggregate(raw: RawSample[]): Result[] {
  const groups = new Map<string, RawSample[]>();
  for (const r of raw) {
    const k = `${r.scenario}|${r.workload}|${r.conns}|${r.size}`;
    groups.set(k, [...(groups.get(k) ?? []), r]);
  }
  const out: Result[] = [];
  for (const rs of groups.values()) {
    const used = rs.filter((r) => r.verified);
    const med = (m: typeof METRICS[number]) => {
      const xs = used.map((r) => r[m]).filter((x): x is number => x !== null);
      return xs.length ? median(xs) : null;
    };
    const vals = (m: 'p50_us' | 'rps' | 'gbps') => used.map((r) => r[m]).filter((x): x is number => x !== null);
    const r0 = rs[0]!;
    out.push({
      scenario: r0.scenario, workload: r0.workload, conns: r0.conns, size: r0.size,
      p50_us: med('p50_us'), p90_us: med('p90_us'), p99_us: med('p99_us'), rps: med('rps'), gbps: med('gbps'),
      cpu_us_per_req: med('cpu_us_per_req'), tcp_data_segs_per_req: med('tcp_data_segs_per_req'), redirected_share: med('redirected_share'),
      connect_p50_us: med('connect_p50_us'), request_p50_us: med('request_p50_us'), close_p50_us: med('close_p50_us'),
      rounds_used: used.length, rounds_discarded: rs.length - used.length,
      spread: { p50_us: range(vals('p50_us')), rps: range(vals('rps')), gbps: range(vals('gbps')) },
    });
  }
  const order = (r: Result) => [['rr', 'http', 'crr', 'stream'].indexOf(r.workload), r.conns, r.size ?? 0, SCENARIOS.indexOf(r.scenario)];
  return out.sort((a, b) => {
    const x = order(a), y = order(b);
    for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return x[i]! - y[i]!;
    return 0;
  });
}

export function find(results: Result[], scenario: ScenarioName, workload: WorkloadName, conns: number, size: number | null): Result | undefined {
  return results.find((r) => r.scenario === scenario && r.workload === workload && r.conns === conns && r.size === size);
}

function ratio(a: number | null | undefined, b: number | null | undefined): number | null {
  return a == null || b == null || b === 0 ? null : a / b;
}

export interface Headline { what: string; ratio: number | null; goal: string }

/**
 * The ratios the project reports, from one run (never from numbers of
 * different runs), with the aims of the performance issue in force (issue 13).
 */
export function headlines(results: Result[]): Headline[] {
  const f = (s: ScenarioName, w: WorkloadName, c: number, z: number | null) => find(results, s, w, c, z);
  const h: Headline[] = [];
  for (const s of ['accel', 'accel-crosspod'] as const) {
    for (const c of [1, 16]) {
      h.push({ what: `${s} / istio-iptables, rr 64 B p50, ${c} conn`, ratio: ratio(f(s, 'rr', c, 64)?.p50_us, f('istio-iptables', 'rr', c, 64)?.p50_us), goal: s === 'accel' ? '<= 0.80' : '<= 0.65' });
      h.push({ what: `${s} / istio-iptables, rr 64 B p99, ${c} conn`, ratio: ratio(f(s, 'rr', c, 64)?.p99_us, f('istio-iptables', 'rr', c, 64)?.p99_us), goal: 'lower is better' });
    }
    h.push({ what: `${s} / istio-iptables, crr rate`, ratio: ratio(f(s, 'crr', 1, 64)?.rps, f('istio-iptables', 'crr', 1, 64)?.rps), goal: '>= 1.00' });
    h.push({ what: `${s} / istio-iptables, stream Gbit/s`, ratio: ratio(f(s, 'stream', 1, null)?.gbps, f('istio-iptables', 'stream', 1, null)?.gbps), goal: '>= 2' });
    h.push({ what: `${s} / istio-iptables, http p50, 1 conn`, ratio: ratio(f(s, 'http', 1, null)?.p50_us, f('istio-iptables', 'http', 1, null)?.p50_us), goal: 'lower is better' });
    h.push({ what: `${s} / uds-floor, rr 64 B p50, 1 conn`, ratio: ratio(f(s, 'rr', 1, 64)?.p50_us, f('uds-floor', 'rr', 1, 64)?.p50_us), goal: 'the floor is 1.0' });
  }
  h.push({ what: 'accel-unpaired / nomesh, rr 64 B p50, 1 conn', ratio: ratio(f('accel-unpaired', 'rr', 1, 64)?.p50_us, f('nomesh', 'rr', 1, 64)?.p50_us), goal: '<= 1.03' });
  h.push({ what: 'accel-unpaired / nomesh, crr rate', ratio: ratio(f('accel-unpaired', 'crr', 1, 64)?.rps, f('nomesh', 'crr', 1, 64)?.rps), goal: '>= 0.98' });
  h.push({ what: 'accel-unpaired / nomesh, stream Gbit/s', ratio: ratio(f('accel-unpaired', 'stream', 1, null)?.gbps, f('nomesh', 'stream', 1, null)?.gbps), goal: '>= 0.97' });
  return h;
}

const fmt = (x: number | null, digits = 1) => (x === null ? '-' : x.toFixed(digits));
const fmtInt = (x: number | null) => (x === null ? '-' : Math.round(x).toLocaleString('en-US'));

/** Where a crr connection's time goes, scenario by scenario (the client's own timing of each part). */
function crrPhasesTable(rows: Result[]): string[] {
  const timed = rows.filter((r) => r.connect_p50_us !== null && r.request_p50_us !== null && r.close_p50_us !== null);
  if (!timed.length) return [];
  return [
    'Each part of a connection, as the client timed it (medians): connect (socket to connected), request (written until the whole answer is read: through both sidecars, their own connections and the app), close.', '',
    '| scenario | connect us | request us | close us |', '|---|---:|---:|---:|',
    ...timed.map((r) => `| ${r.scenario} | ${fmt(r.connect_p50_us)} | ${fmt(r.request_p50_us)} | ${fmt(r.close_p50_us)} |`),
    '',
  ];
}

export function markdown(rep: Report): string {
  const out: string[] = [];
  out.push(`# sidecar-accel bench${rep.quick ? ' (quick)' : ''}`, '');
  out.push(`Kernel ${rep.kernel}, ${rep.cpus} CPUs (${rep.cpu_model}), ${rep.date}; ${rep.rounds} interleaved rounds of ${rep.seconds_per_measurement} s per measurement; CPU pinning: ${rep.cpu_pinning ?? 'none'}.`);
  if (rep.self_test_mode) {
    out.push(`The agent's start-up self-test on this kernel chose "${rep.self_test_mode}" mode${rep.self_test_mode === 'full' ? '' : ' (by default only the sidecar\'s own sockets would be paired here)'}; the accel scenarios run with datapath.applications: always, to measure the datapath itself.`);
  }
  out.push('Medians over the rounds the kernel verified (accel: at least 95% of the bytes on the expected hops redirected, from the programs\' counters against the pods\' link counters, cross-checked with nstat); [min..max] of those rounds. Latencies are full round trips. CPU is machine-wide busy time (softirq included) per request.', '');
  out.push('## Ratios from this run', '', '| comparison | ratio | aim |', '|---|---:|---|');
  for (const h of headlines(rep.results)) out.push(`| ${h.what} | ${h.ratio === null ? '-' : h.ratio.toFixed(2) + 'x'} | ${h.goal} |`);
  out.push('');
  const sections: [string, (r: Result) => boolean][] = [
    ['rr: request/response (own C client, bench/native/rr.c)', (r) => r.workload === 'rr'],
    ['http: HTTP/1.1 keep-alive, TLS between the sidecars (wrk)', (r) => r.workload === 'http'],
    ['crr: a fresh connection per 64 B request (own C client)', (r) => r.workload === 'crr'],
    ['stream: one connection, bulk (own C client and sink, non-blocking)', (r) => r.workload === 'stream'],
  ];
  for (const [title, pick] of sections) {
    out.push(`## ${title}`, '');
    out.push('| conns | size | scenario | p50 us | p90 us | p99 us | req/s | Gbit/s | CPU us/req | TCP data+FIN segs/req | bytes redirected | vs istio-iptables | rounds |');
    out.push('|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|');
    for (const r of rep.results.filter(pick)) {
      const base = find(rep.results, 'istio-iptables', r.workload, r.conns, r.size);
      const vs = r.workload === 'stream' ? ratio(r.gbps, base?.gbps) : ratio(r.p50_us, base?.p50_us);
      const sp = r.spread;
      const p50 = r.p50_us === null ? '-' : `${fmt(r.p50_us)}${sp.p50_us ? ` [${sp.p50_us[0].toFixed(1)}..${sp.p50_us[1].toFixed(1)}]` : ''}`;
      const gbps = r.gbps === null ? '-' : `${r.gbps.toFixed(2)}${sp.gbps ? ` [${sp.gbps[0].toFixed(2)}..${sp.gbps[1].toFixed(2)}]` : ''}`;
      const rounds = `${r.rounds_used}${r.rounds_discarded ? ` (+${r.rounds_discarded} discarded)` : ''}`;
      out.push(`| ${r.conns} | ${r.size ?? '-'} | ${r.scenario} | ${p50} | ${fmt(r.p90_us)} | ${fmt(r.p99_us)} | ${fmtInt(r.rps)} | ${gbps} | ${fmt(r.cpu_us_per_req)} | ${fmt(r.tcp_data_segs_per_req, 2)} | ${r.redirected_share === null ? '-' : (100 * r.redirected_share).toFixed(1) + '%'} | ${vs === null ? '-' : vs.toFixed(2) + 'x'} | ${rounds} |`);
    }
    out.push('');
    if (title.startsWith('crr')) out.push(...crrPhasesTable(rep.results.filter(pick)));
  }
  const discarded = rep.raw.filter((r) => !r.verified);
  out.push('## Discarded rounds', '');
  if (!discarded.length) out.push('None: in every accel round the programs redirected at least 95% of the bytes on its expected hops, and every baseline round ran with no program attached.');
  for (const d of discarded) {
    const got = d.gbps !== null ? `${d.gbps.toFixed(2)} Gbit/s` : `p50 ${fmt(d.p50_us)} us, ${fmtInt(d.rps)} req/s`;
    out.push(`- round ${d.round} ${d.scenario} ${d.workload} conns ${d.conns} size ${d.size ?? '-'} (measured ${got}, not counted): ${d.verification}`);
  }
  out.push('', '## Scenarios', '');
  for (const s of SCENARIOS) out.push(`- \`${s}\`: ${SCENARIO_SPECS[s].about}`);
  out.push('');
  return out.join('\n');
}
