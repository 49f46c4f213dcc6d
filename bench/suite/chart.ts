// The chart of a run: Vega-Lite compiled and rendered to SVG by Vega, headless.
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import { SCENARIOS } from './scenarios.js';
import type { Report, Result } from './report.js';

interface Row { scenario: string; point: string; value: number; lo: number; hi: number }

function rows(results: Result[], pick: (r: Result) => boolean, metric: 'p50_us' | 'rps' | 'gbps', label: (r: Result) => string): Row[] {
  return results.filter(pick).flatMap((r) => {
    const v = r[metric];
    if (v === null) return [];
    const sp = metric === 'p50_us' ? r.spread.p50_us : metric === 'rps' ? r.spread.rps : r.spread.gbps;
    return [{ scenario: r.scenario, point: label(r), value: v, lo: sp?.[0] ?? v, hi: sp?.[1] ?? v }];
  });
}

function panel(title: string, data: Row[], yTitle: string, width: number): Record<string, unknown> {
  const color = { field: 'scenario', type: 'nominal', scale: { domain: [...SCENARIOS] }, legend: { orient: 'top', title: null } };
  return {
    title, width, height: 220, data: { values: data },
    encoding: {
      x: { field: 'point', type: 'ordinal', sort: null, title: null, axis: { labelAngle: 0 } },
      xOffset: { field: 'scenario', sort: [...SCENARIOS] },
    },
    layer: [
      { mark: 'bar', encoding: { y: { field: 'value', type: 'quantitative', title: yTitle }, color } },
      // The spread of the rounds (min..max) over each bar.
      { mark: { type: 'rule', color: '#333' }, encoding: { y: { field: 'lo', type: 'quantitative' }, y2: { field: 'hi' } } },
    ],
  };
}

/** Each accel scenario against istio-iptables at every point: below 1 is faster (rate and Gbit/s inverted). */
function ratioRows(results: Result[]): Row[] {
  const out: Row[] = [];
  for (const r of results) {
    if (!['accel', 'accel-crosspod'].includes(r.scenario)) continue;
    const base = results.find((b) => b.scenario === 'istio-iptables' && b.workload === r.workload && b.conns === r.conns && b.size === r.size);
    const v = r.workload === 'stream' ? (base?.gbps && r.gbps ? base.gbps / r.gbps : null)
      : r.workload === 'crr' ? (base?.rps && r.rps ? base.rps / r.rps : null)
        : (base?.p50_us && r.p50_us ? r.p50_us / base.p50_us : null);
    if (v === null) continue;
    out.push({ scenario: r.scenario, point: `${r.workload}${r.size === null ? '' : ` ${r.size} B`} x${r.conns}`, value: v, lo: v, hi: v });
  }
  return out;
}

export async function chartSvg(rep: Report): Promise<string> {
  const r = rep.results;
  const spec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: `sidecar-accel bench: ${rep.kernel}, ${rep.cpus} CPUs, ${rep.date.slice(0, 10)}`, subtitle: 'medians of interleaved rounds; lines: min..max' },
    config: { font: 'sans-serif' },
    vconcat: [
      panel('time per request vs istio-iptables (p50; crr and stream: 1 / rate), below 1.0 is faster', ratioRows(r), 'ratio', 720),
      panel('rr: round-trip p50, lower is better', rows(r, (x) => x.workload === 'rr', 'p50_us', (x) => `${x.size} B x${x.conns}`), 'microseconds', 720),
      {
        hconcat: [
          panel('http via TLS sidecars: p50', rows(r, (x) => x.workload === 'http', 'p50_us', (x) => `x${x.conns}`), 'microseconds', 220),
          panel('crr: connections/s, higher is better', rows(r, (x) => x.workload === 'crr', 'rps', () => 'crr'), 'per second', 150),
          panel('stream: Gbit/s, higher is better', rows(r, (x) => x.workload === 'stream', 'gbps', () => 'stream'), 'Gbit/s', 150),
        ],
      },
    ],
  } as unknown as TopLevelSpec;
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  return view.toSVG();
}
