// The README is what an operator reads first: its first screen answers their
// questions in a fixed order, and every metric it names is one the agent
// exports, with every metric and fallback reason the agent exports named in
// its Metrics reference.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AgentMetrics } from '../../src/api/metrics.js';
import { zeroCounters } from '../../src/datapath/layout.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const readme = fs.readFileSync(path.join(repo, 'README.md'), 'utf8');

/** What the agent exports: metric names, and the label values of sidecar_accel_fallbacks_total. */
async function exported(): Promise<{ names: string[]; reasons: string[] }> {
  const m = new AgentMetrics(() => ({
    counters: zeroCounters, workloads: () => [], workloadCounters: () => null, mapFill: () => [],
    xds: () => ({ state: 'serving', responses: 0, acks: 0, nacks: 0, workloadsOnNode: 0 }),
  }));
  const metrics = await m.registry.getMetricsAsJSON();
  const reasons = metrics.find((x) => x.name === 'sidecar_accel_fallbacks_total')?.values.map((v) => String(v.labels.reason)) ?? [];
  return { names: metrics.map((x) => x.name), reasons };
}

function section(title: string): string {
  const start = readme.indexOf(`\n## ${title}\n`);
  assert.ok(start >= 0, `README has a section "${title}"`);
  const end = readme.indexOf('\n## ', start + 1);
  return readme.slice(start, end < 0 ? undefined : end);
}

test('the first screen answers an operator in order: what, kernels, measured, install, check, limitations', () => {
  const firstScreen = readme.slice(0, readme.indexOf('\n## '));
  const labels = ['**What it does.**', '**Kernels.**', '**Measured**', '**Install**', '**Check that it works.**', '**Limitations.**'];
  const at = labels.map((l) => firstScreen.indexOf(l));
  assert.ok(at.every((i) => i >= 0), `every label before the first section: ${labels.filter((_l, i) => at[i]! < 0).join(', ')}`);
  assert.deepEqual([...at].sort((a, b) => a - b), at, 'in this order');
  assert.match(firstScreen, /Never run against a real istiod or a real cluster/);
  // The open risk to data, said before anything is installed.
  assert.match(firstScreen, /Not proven in production yet/);
  assert.doesNotMatch(readme, /shared\/DESIGN\.md|what we aim at/);
});

test('every metric the README names is one the agent exports', async () => {
  const { names } = await exported();
  const named = new Set(readme.match(/sidecar_accel_[a-z_]+/g));
  assert.ok(named.size > 10, 'the README names metrics');
  assert.deepEqual([...named].filter((n) => !names.includes(n)), []);
});

test('the Metrics reference names every metric and every fallback reason the agent exports', async () => {
  const { names, reasons } = await exported();
  const ref = section('Metrics reference');
  assert.ok(names.length > 10 && reasons.length > 10, 'the agent exports metrics and reasons');
  assert.deepEqual(names.filter((n) => !ref.includes(`\`${n}`)), [], 'metrics missing from the reference');
  assert.deepEqual(reasons.filter((r) => !ref.includes(`\`${r}\``)), [], 'fallback reasons missing from the reference');
});
