// The agent with the kubernetes source on real pods: the API server is a
// local fake speaking list+watch; the pods are real netns pods whose cgroups
// carry kubelet's names (pod<uid>), so their network namespaces are found the
// way they are on a node.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Topology, type Pod } from '../../lab/topology/topology.js';
import { LineProcess } from '../../src/util/lines.js';
import { FakeApiServer } from '../unit/fake-apiserver.js';
import { kernelSkip, assertKernelAccess, scaled } from './gate.js';
import { caseScript, PeerProcess } from './mesh.js';

const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');
const PODS = '/api/v1/pods';
const NSS = '/api/v1/namespaces';
const CMS = '/api/v1/namespaces/istio-system/configmaps';

describe('agent with the kubernetes source', { skip: kernelSkip, timeout: scaled(120_000) }, () => {
  let topo: Topology;
  let api: FakeApiServer;
  let agent: LineProcess | undefined;
  let port: number;
  const uids = { a: crypto.randomUUID(), b: crypto.randomUUID() };
  let pods: Record<'a' | 'b', Pod>;
  const manifest = (which: 'a' | 'b', ann: Record<string, string> = {}) => ({
    metadata: { name: `app-${which}`, namespace: 'shop', uid: uids[which],
      annotations: { 'sidecar.istio.io/status': '{"containers":["istio-proxy"]}', ...ann } },
    spec: { nodeName: 'node-1' },
    // The agent takes a netns for the pod only when it holds one of these.
    status: { phase: 'Running', podIP: pods[which].ip4, podIPs: [{ ip: pods[which].ip4 }, { ip: pods[which].ip6 }] },
  });

  before(async () => {
    assertKernelAccess();
    api = new FakeApiServer();
    for (const p of [PODS, NSS, CMS]) api.collection(p);
    api.put(NSS, { metadata: { name: 'shop', annotations: { 'sidecar-accel.io/enabled': 'true' } } });
    await api.start();
    topo = await Topology.create({ label: 'k8s' });
    // kubelet names a pod's cgroup pod<uid>; the sidecar process runs in it.
    pods = { a: await topo.addPod(`pod${uids.a}`), b: await topo.addPod(`pod${uids.b}`) };
    api.put(PODS, manifest('a'));
    api.put(PODS, manifest('b', { 'sidecar-accel.io/enabled': 'false' }));
    api.put(PODS, { metadata: { name: 'other-node', namespace: 'shop', uid: crypto.randomUUID() }, spec: { nodeName: 'node-2' } });
    await pods.a.startSidecar({ upstream4: `${pods.b.ip4}:8080`, appPort: 8080 });
    await pods.b.startSidecar({ upstream4: `${pods.a.ip4}:8080`, appPort: 8080 });
    port = 20000 + Math.floor(Math.random() * 20000);
    fs.writeFileSync(topo.file('kubeconfig'), api.kubeconfig());
    fs.writeFileSync(topo.file('agent.yaml'), [
      `api: {listen: 127.0.0.1:${port}}`,
      `datapath: {cgroup: ${topo.cgroupDir}, requireRootCgroup: false, pinDir: /sys/fs/bpf/${topo.prefix}}`,
      `kubernetes: {enabled: true, nodeName: node-1, kubeconfig: ${topo.file('kubeconfig')}, hostProc: /proc}`, '',
    ].join('\n'));
    agent = new LineProcess(spawn(process.execPath, [cli, 'agent', '--config', topo.file('agent.yaml'), '--skip-self-test'], { stdio: ['ignore', 'pipe', 'pipe'] }));
    await agent.waitForLine((l) => l.includes('"API listening"'), 'agent up');
  });
  after(async () => {
    agent?.child.kill('SIGKILL');
    await agent?.exited;
    if (topo) fs.rmSync(`/sys/fs/bpf/${topo.prefix}`, { recursive: true, force: true });
    await api?.stop();
    await topo?.destroy();
  });

  const workloads = async () => (await (await fetch(`http://127.0.0.1:${port}/v1/workloads`)).json()) as
    { workloads: { name: string; source: string; enabled: boolean; rule: string; state: string; netnsCookie: string | null }[] };
  /** Waits for the agent's log line saying a workload reached a state (an event, not a poll). */
  const stateLogged = (workload: string, state: string) =>
    agent!.waitForLine((l) => l.includes(`"workload":"${workload}"`) && l.includes(`"state":"${state}"`), `${workload} ${state}`);

  test('pods of this node are found by UID, toggled by their annotations, and really paired', async () => {
    await stateLogged('shop/app-a', 'enabled');
    const ws = (await workloads()).workloads;
    assert.deepEqual(ws.map((w) => [w.source, w.name, w.enabled, w.rule]).sort(), [
      ['kubernetes', 'app-a', true, 'namespace-annotation'],
      ['kubernetes', 'app-b', false, 'pod-annotation'],
    ]);
    assert.ok(ws.find((w) => w.name === 'app-a')!.netnsCookie, 'the pod netns was resolved from its cgroup');
    const before = (await (await fetch(`http://127.0.0.1:${port}/v1/stats`)).json()) as { node: { socketsPaired: number } };
    const p = new PeerProcess(pods.a.spawn('python3', [caseScript, 'halfclose', '9200']));
    await p.finished();
    const after = (await (await fetch(`http://127.0.0.1:${port}/v1/stats`)).json()) as { node: { socketsPaired: number } };
    assert.equal(after.node.socketsPaired - before.node.socketsPaired, 2, 'the enabled pod was not paired');
  });

  test('a changed annotation and a deleted pod converge', async () => {
    api.put(PODS, manifest('b'));
    await stateLogged('shop/app-b', 'enabled');
    api.delete(PODS, manifest('a'));
    await agent!.waitForLine((l) => l.includes('"workload":"shop/app-a"') && l.includes('"state":"removed"'), 'app-a removed');
    assert.deepEqual((await workloads()).workloads.map((w) => [w.name, w.enabled]), [['app-b', true]]);
  });
});
