// The agent with the kubernetes and xds sources on real pods: a fake API
// server lists the pods, an in-process xDS server plays istiod. What istiod
// says reaches the kernel: a pod it marks HBONE is never enabled whatever its
// annotations, a pod it knows on this node may pair across pods (the netns
// flag in the pinned map), one it does not know may not, its canonical
// service labels the metrics; and a server that does not serve the type
// leaves the agent serving the kubernetes source alone.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Topology, type Pod } from '../../lab/topology/topology.js';
import { LineProcess } from '../../src/util/lines.js';
import { FakeApiServer } from '../unit/fake-apiserver.js';
import { FakeXdsServer, workloadResource, type FakeStream } from '../unit/fake-xds.js';
import { podWorkloadUid } from '../../src/xds/workload-api.js';
import { kernelSkip, assertKernelAccess } from './gate.js';

const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');
const PODS = '/api/v1/pods';
const NSS = '/api/v1/namespaces';
const CMS = '/api/v1/namespaces/istio-system/configmaps';

interface Status { name: string; enabled: boolean; rule: string; crossPod: boolean; canonicalService: string; netnsCookie: string | null }

describe('agent with the xds source', { skip: kernelSkip, timeout: Number(process.env.XDS_TEST_TIMEOUT ?? 120_000) }, () => {
  let topo: Topology;
  let api: FakeApiServer;
  let xds: FakeXdsServer;
  const agents: LineProcess[] = [];
  const uids = { a: crypto.randomUUID(), b: crypto.randomUUID(), c: crypto.randomUUID() };
  let pods: Record<'a' | 'b' | 'c', Pod>;
  const manifest = (which: 'a' | 'b' | 'c') => ({
    metadata: { name: `app-${which}`, namespace: 'shop', uid: uids[which],
      annotations: { 'sidecar.istio.io/status': '{"containers":["istio-proxy"]}', 'sidecar-accel.io/enabled': 'true' } },
    spec: { nodeName: 'node-1' }, status: { phase: 'Running', podIPs: [{ ip: pods[which].ip4 }] },
  });
  const xdsUid = (which: string) => podWorkloadUid('Kubernetes', 'shop', `app-${which}`);

  before(async () => {
    assertKernelAccess();
    api = new FakeApiServer();
    for (const p of [PODS, NSS, CMS]) api.collection(p);
    api.put(NSS, { metadata: { name: 'shop' } });
    await api.start();
    xds = new FakeXdsServer();
    await xds.start();
    topo = await Topology.create({ label: 'xds' });
    pods = { a: await topo.addPod(`pod${uids.a}`), b: await topo.addPod(`pod${uids.b}`), c: await topo.addPod(`pod${uids.c}`) };
    for (const w of ['a', 'b', 'c'] as const) api.put(PODS, manifest(w));
    // kubelet names a pod's cgroup pod<uid>; a process in it leads the agent to the pod's netns.
    for (const p of Object.values(pods)) p.spawn('sleep', ['infinity']);
    fs.writeFileSync(topo.file('kubeconfig'), api.kubeconfig());
  });
  after(async () => {
    for (const a of agents) { a.child.kill('SIGKILL'); await a.exited; }
    if (process.env.XDS_TEST_LOG) for (const a of agents) console.log(a.lines.slice(-40).join('\n'));
    if (topo) fs.rmSync(`/sys/fs/bpf/${topo.prefix}`, { recursive: true, force: true });
    xds?.stop();
    await api?.stop();
    await topo?.destroy();
  });

  /** Starts an agent against `xdsAddress`; returns its API port and log. */
  async function startAgent(name: string, xdsAddress: string, noAnswerSeconds: number): Promise<{ port: number; agent: LineProcess }> {
    const port = 20000 + Math.floor(Math.random() * 20000);
    fs.writeFileSync(topo.file(`${name}.yaml`), [
      `api: {listen: 127.0.0.1:${port}}`,
      `datapath: {cgroup: ${topo.cgroupDir}, requireRootCgroup: false, pinDir: /sys/fs/bpf/${topo.prefix}, crossPod: true}`,
      `kubernetes: {enabled: true, nodeName: node-1, kubeconfig: ${topo.file('kubeconfig')}, hostProc: /proc}`,
      `xds: {enabled: true, address: "${xdsAddress}", plaintext: true, noAnswerSeconds: ${noAnswerSeconds}}`, '',
    ].join('\n'));
    const agent = new LineProcess(spawn(process.execPath, [cli, 'agent', '--config', topo.file(`${name}.yaml`), '--skip-self-test'], { stdio: ['ignore', 'pipe', 'pipe'] }));
    agents.push(agent);
    await agent.waitForLine((l) => l.includes('"API listening"'), 'agent up');
    return { port, agent };
  }
  /** A log line written after `mark` lines (a later state change, not an earlier one). */
  const logged = (agent: LineProcess, mark: number, pred: (l: string) => boolean, what: string) =>
    agent.waitForLine((l) => agent.lines.indexOf(l) >= mark && pred(l), what);
  const workloads = async (port: number) => ((await (await fetch(`http://127.0.0.1:${port}/v1/workloads`)).json()) as { workloads: Status[] }).workloads
    .sort((x, y) => x.name.localeCompare(y.name));
  /** Enabled netns -> cross-pod flag, as the pinned kernel map holds them (sidecar-accel status). */
  const kernelPolicies = () => {
    const s = JSON.parse(execFileSync(process.execPath, [cli, 'status', '--json', '--config', topo.file('agent1.yaml')], { encoding: 'utf8' })) as
      { generations: { enabledNetns: { netnsCookie: string; crossPod: boolean }[] }[] };
    return new Map(s.generations.flatMap((g) => g.enabledNetns).map((n) => [n.netnsCookie, n.crossPod]));
  };
  const kernelCrossPod = (cookie: string | null) => kernelPolicies().get(cookie ?? '');

  test('istiod decides HBONE, mesh membership (cross-pod) and the canonical labels', async () => {
    const streamReady = xds.stream(1);
    const { port, agent } = await startAgent('agent1', `127.0.0.1:${xds.port}`, 60);
    const s: FakeStream = await streamReady;
    const first = await s.request(0);
    assert.equal(first.node?.metadata?.fields?.NODE_NAME?.stringValue, 'node-1');
    // Before istiod answers nothing is known to be a mesh workload: no cross-pod.
    await agent.waitForLine((l) => l.includes('"workload":"shop/app-a"') && l.includes('"state":"enabled"'), 'app-a enabled');
    assert.ok((await workloads(port)).every((w) => !w.crossPod), 'no cross-pod pairing before istiod answers');

    let mark = agent.lines.length;
    s.send({ resources: [
      workloadResource({ uid: xdsUid('a'), name: 'app-a', namespace: 'shop', node: 'node-1', tunnel_protocol: 'NONE', canonical_name: 'reviews', canonical_revision: 'v3' }),
      workloadResource({ uid: xdsUid('b'), name: 'app-b', namespace: 'shop', node: 'node-1', tunnel_protocol: 'HBONE' }),
      // app-c: not in istiod's view (for instance another cluster's registry): enabled, but in-pod only.
    ] });
    assert.equal((await s.request(1)).error_detail, null);
    await logged(agent, mark, (l) => l.includes('"workload":"shop/app-b"') && l.includes('"rule":"xds-hbone"'), 'app-b off by istiod');
    let ws = await workloads(port);
    assert.deepEqual(ws.map((w) => [w.name, w.enabled, w.rule, w.crossPod]), [
      ['app-a', true, 'pod-annotation', true],
      ['app-b', false, 'xds-hbone', false],
      ['app-c', true, 'pod-annotation', false],
    ]);
    assert.equal(kernelCrossPod(ws[0]!.netnsCookie), true, 'the kernel map lets app-a pair across pods');
    assert.equal(kernelCrossPod(ws[2]!.netnsCookie), false, 'the kernel map keeps app-c in-pod only');
    assert.equal(kernelCrossPod(ws[1]!.netnsCookie), undefined, 'app-b is not enabled in the kernel');
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    assert.match(metrics, /sidecar_accel_xds_state\{state="serving"\} 1/);
    assert.match(metrics, /sidecar_accel_workload_sockets_paired_total\{namespace="shop",workload="app-a",canonical_service="reviews",canonical_revision="v3"\}/);

    // istiod changes its mind: app-b is a sidecar workload after all; app-a is removed from its view.
    mark = agent.lines.length;
    s.send({ resources: [workloadResource({ uid: xdsUid('b'), name: 'app-b', namespace: 'shop', node: 'node-1', tunnel_protocol: 'NONE' }, '2')], removed_resources: [xdsUid('a')] });
    await s.request(2);
    await logged(agent, mark, (l) => l.includes('"workload":"shop/app-b"') && l.includes('"state":"enabled"'), 'app-b enabled');
    ws = await workloads(port);
    assert.deepEqual(ws.map((w) => [w.name, w.enabled, w.crossPod]), [['app-a', true, false], ['app-b', true, true], ['app-c', true, false]]);
    assert.equal(kernelCrossPod(ws[0]!.netnsCookie), false);
    assert.equal(kernelCrossPod(ws[1]!.netnsCookie), true);

    // istiod goes away: the last state stays.
    mark = agent.lines.length;
    xds.stop();
    await logged(agent, mark, (l) => l.includes('xDS stream'), 'stream end logged'); // closed or failed: either way
    ws = await workloads(port);
    assert.deepEqual(ws.map((w) => [w.name, w.enabled, w.crossPod]), [['app-a', true, false], ['app-b', true, true], ['app-c', true, false]]);
    agents.splice(agents.indexOf(agent), 1);
    agent.child.kill('SIGTERM');
    await agent.exited;
  });

  test('an agent restart is hitless: nothing is disabled or unflagged while the API server lists and istiod has not answered', async () => {
    const before = kernelPolicies();
    assert.equal(before.size, 3, 'test 1 left three pods enabled');
    const silent = new FakeXdsServer(); // takes the stream, never answers
    const address = await silent.start();
    api.hold();
    try {
      const { port, agent } = await startAgent('agent-restart', address, 60);
      // The first reconcile ran before the API listened: the kernel map is as it was.
      assert.deepEqual(kernelPolicies(), before);
      assert.equal((await (await fetch(`http://127.0.0.1:${port}/readyz`)).json() as { reason: string }).reason, 'kubernetes source not synced: listing');
      api.release();
      await agent.waitForLine((l) => l.includes('kubernetes source synced'), 'kubernetes synced');
      await agent.waitForLine((l) => l.includes('"workload":"shop/app-c"'), 'app-c reconciled');
      assert.deepEqual(kernelPolicies(), before, 'istiod has not answered: the cross-pod flags stay as they were');
      assert.deepEqual((await workloads(port)).map((w) => [w.name, w.enabled, w.crossPod]), [['app-a', true, false], ['app-b', true, true], ['app-c', true, false]]);
      assert.equal(agent.lines.filter((l) => /"state":"(disabled|removed)"/.test(l)).length, 0);
      agents.splice(agents.indexOf(agent), 1);
      agent.child.kill('SIGKILL');
      await agent.exited;
    } finally {
      api.release();
      silent.stop();
    }
  });

  test('a server that does not serve the type: said once, the kubernetes source alone; a config pointing at one that serves applies live', async () => {
    const silent = new FakeXdsServer({ withAds: false });
    const address = await silent.start();
    try {
      const { port, agent } = await startAgent('agent2', address, 1);
      await agent.waitForLine((l) => l.includes('serves no workload API'), 'said so');
      await agent.waitForLine((l) => l.includes('"workload":"shop/app-b"') && l.includes('"state":"enabled"') && l.includes('"rule":"pod-annotation"'), 'app-b on by its annotation');
      await agent.waitForLine((l) => l.includes('kubernetes source synced'), 'kubernetes synced');
      const ready = await fetch(`http://127.0.0.1:${port}/readyz`);
      assert.equal(ready.status, 200, await ready.text());
      const ws = await workloads(port);
      assert.deepEqual(ws.map((w) => [w.name, w.enabled, w.crossPod]), [['app-a', true, true], ['app-b', true, true], ['app-c', true, true]]);
      const stats = (await (await fetch(`http://127.0.0.1:${port}/v1/stats`)).json()) as { xds: { state: string } };
      assert.equal(stats.xds.state, 'not-served');
      assert.equal(agent.lines.filter((l) => l.includes('serves no workload API')).length, 1, 'said once');

      // The config now points at an istiod that serves: the sources are replaced live.
      const istiod = new FakeXdsServer();
      const served = await istiod.start();
      try {
        const mark = agent.lines.length;
        fs.writeFileSync(topo.file('agent2.yaml'), fs.readFileSync(topo.file('agent2.yaml'), 'utf8').replace(address, served));
        await logged(agent, mark, (l) => l.includes('workload sources replaced'), 'sources replaced');
        const s = await istiod.stream(1);
        await s.request(0);
        s.send({ resources: ['a', 'b', 'c'].map((w) => workloadResource({ uid: xdsUid(w), node: 'node-1', tunnel_protocol: w === 'b' ? 'HBONE' : 'NONE' })) });
        await s.request(1);
        await logged(agent, mark, (l) => l.includes('"workload":"shop/app-b"') && l.includes('"rule":"xds-hbone"'), 'app-b off by the new istiod');
        assert.deepEqual((await workloads(port)).map((w) => [w.name, w.enabled]), [['app-a', true], ['app-b', false], ['app-c', true]]);
        const dropped = agent.lines.slice(mark).filter((l) => /"workload":"shop\/app-[ac]".*"state":"(disabled|removed)"/.test(l));
        assert.deepEqual(dropped, [], `the other pods stayed enabled while the new kubernetes source listed; log since the change:\n${agent.lines.slice(mark).join('\n')}`);
      } finally {
        istiod.stop();
      }
    } finally {
      silent.stop();
    }
  });
});
