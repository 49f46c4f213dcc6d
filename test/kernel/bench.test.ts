// The bench's kernel-side proof, on real pods: baselines run with nothing of
// ours attached, accel rounds show the bytes of their hops redirected, and the TCP data
// segments per request are what each scenario's path implies. Speed is never
// asserted here (bench/ measures it).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { kernelSkip, requireKernel, assertKernelAccess, scaled } from './gate.js';
import { createBenchPods, type BenchPods } from '../../bench/suite/pods.js';
import { AgentControl } from '../../bench/suite/agent-control.js';
import { SCENARIO_SPECS, exchangeOf, type ScenarioName, type WorkloadPoint } from '../../bench/suite/scenarios.js';
import { measure } from '../../bench/suite/run.js';
import type { RawSample } from '../../bench/suite/report.js';

let pods: BenchPods | undefined;
let control: AgentControl | undefined;

before(async () => {
  if (kernelSkip) return;
  if (requireKernel) assertKernelAccess();
  pods = await createBenchPods();
  control = new AgentControl(pods);
});

after(async () => {
  try { await control?.off(); } finally { await pods?.topo.destroy(); }
});

async function once(scenario: ScenarioName, point: WorkloadPoint): Promise<RawSample> {
  const spec = SCENARIO_SPECS[scenario];
  if (spec.agent) await control!.on(spec.agent.crossPod); else await control!.off();
  return measure({ spec, point, seconds: 1, clkTck: 100, ex: exchangeOf(spec, pods!), control: control!, round: 1 });
}

const rr: WorkloadPoint = { workload: 'rr', conns: 1, size: 64 };

test('bench scenarios: each path carries the TCP data its hops imply, verified from the kernel', { skip: kernelSkip, timeout: scaled(180_000) }, async () => {
  const base = await once('istio-iptables', rr);
  assert.equal(base.verified, true, base.verification);
  assert.equal(control!.attached(), null, 'no program of ours during a baseline');
  // three TCP hops, a request and a response on each
  assert.ok(Math.abs(base.tcp_data_segs_per_req! - 6) < 0.1, `istio-iptables: ${base.tcp_data_segs_per_req} data segments per request`);

  const accel = await once('accel', rr);
  assert.equal(accel.verified, true, accel.verification);
  // Every byte of the in-pod hops was redirected: all loopback carried beyond
  // headers is the handshakes' 8 bytes of SYN options each.
  assert.ok(accel.redirected_share! > 0.999, accel.verification);
  assert.equal(base.redirected_share, null, 'a baseline has no share');
  // only the pod-to-pod hop is left on TCP
  assert.ok(Math.abs(accel.tcp_data_segs_per_req! - 2) < 0.1, `accel: ${accel.tcp_data_segs_per_req}`);

  const cross = await once('accel-crosspod', rr);
  assert.equal(cross.verified, true, cross.verification);
  assert.ok(cross.tcp_data_segs_per_req! < 0.01, `accel-crosspod: ${cross.tcp_data_segs_per_req}`);
  assert.ok(cross.redirected_share! > 0.999, cross.verification);

  const unpaired = await once('accel-unpaired', rr);
  assert.equal(unpaired.verified, true, unpaired.verification);
  assert.ok(Math.abs(unpaired.tcp_data_segs_per_req! - 2) < 0.1, `accel-unpaired: ${unpaired.tcp_data_segs_per_req}`);

  const floor = await once('uds-floor', rr);
  assert.equal(floor.verified, true);
  assert.ok(floor.rps! > 0 && floor.p50_us! > 0);
});

test('bench http: TLS between HTTP-mode sidecars, every hop redirected with cross-pod pairing', { skip: kernelSkip, timeout: scaled(120_000) }, async () => {
  const http = await once('accel-crosspod', { workload: 'http', conns: 16, size: null });
  assert.equal(http.verified, true, http.verification);
  assert.ok(http.rps! > 0);
  assert.ok(http.tcp_data_segs_per_req! < 0.01, `${http.tcp_data_segs_per_req} TCP data segments per request`);
  await control!.off();
  assert.equal(control!.attached(), null);
});
