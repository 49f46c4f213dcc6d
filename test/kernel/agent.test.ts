// The agent as an operator runs it: a child process with a config file,
// driven through its config (hot reload), its API and signals, on real pods.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createSidecarPair, type SidecarPair } from '../../lab/topology/pair.js';
import { LineProcess } from '../../src/util/lines.js';
import { Datapath } from '../../src/datapath/datapath.js';
import { netnsCookieOfPath } from '../../src/datapath/netns.js';
import { kernelSkip, assertKernelAccess } from './gate.js';
import { PeerProcess, caseScript } from './mesh.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const cli = path.join(repo, 'dist/src/cli/main.js');
const variantObject = path.join(repo, 'build/bpf/sidecar_accel.variant.bpf.o');
const SIDECAR = `sidecar.istio.io/status: '{"containers":["istio-proxy"]}'`;

/** The agent child: pino JSON lines on stdout. */
class AgentProcess extends LineProcess {
  waitLog(msg: string, extra: (o: Record<string, unknown>) => boolean = () => true): Promise<Record<string, unknown>> {
    const parse = (l: string): Record<string, unknown> => { try { return JSON.parse(l) as Record<string, unknown>; } catch { return {}; } };
    return this.waitForLine((l) => { const o = parse(l); return o.msg === msg && extra(o); }, `log "${msg}"`).then(parse);
  }
}

function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d: Buffer) => { stdout += d; });
    c.stderr.on('data', (d: Buffer) => { stderr += d; });
    c.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('the agent', { skip: kernelSkip }, () => {
  let pair: SidecarPair;
  let cfgFile: string;
  let pinRoot: string;
  let port: number;
  const agents: AgentProcess[] = [];
  const peers: PeerProcess[] = [];

  const config = (o: { podA?: string; nsB?: string; mesh?: string; object?: string; requireRoot?: boolean } = {}) => `
api: {listen: 127.0.0.1:${port}}
datapath:
  cgroup: ${pair.topo.cgroupDir}
  requireRootCgroup: ${o.requireRoot ?? false}
  pinDir: ${pinRoot}
  crossPod: true
  keepaliveIdleSeconds: 60
${o.object ? `  object: ${o.object}\n` : ''}mesh: {defaultConfig: {proxyMetadata: {SIDECAR_ACCEL: "${o.mesh ?? 'false'}"}}}
namespaces:
  - name: shop
    annotations: {sidecar-accel.io/enabled: "${o.nsB ?? 'true'}"}
workloads:
  - name: pod-a
    namespace: shop
    netns: ${pair.a.netnsPath}
    ips: [${pair.a.ip4}, "${pair.a.ip6}"]
    annotations:
      ${SIDECAR}
      proxy.istio.io/config: '{"proxyMetadata":{"SIDECAR_ACCEL":"${o.podA ?? 'true'}"}}'
  - name: pod-b
    namespace: shop
    netns: ${pair.b.netnsPath}
    ips: [${pair.b.ip4}, "${pair.b.ip6}"]
    annotations:
      ${SIDECAR}
      sidecar-accel.io/exclude-ports: "9999"
`;

  async function startAgent(args: string[] = []): Promise<AgentProcess> {
    const a = new AgentProcess(spawn(process.execPath, [cli, 'agent', '--config', cfgFile, ...args], { stdio: ['ignore', 'pipe', 'pipe'] }));
    agents.push(a);
    await a.waitLog('API listening');
    return a;
  }
  async function stopAgent(a: AgentProcess, signal: NodeJS.Signals): Promise<void> {
    a.child.kill(signal);
    await a.exited;
  }
  const api = async (p: string, init?: RequestInit) => {
    const r = await fetch(`http://127.0.0.1:${port}${p}`, init);
    return { status: r.status, body: await r.text(), headers: r.headers };
  };
  const workloads = async () => (JSON.parse((await api('/v1/workloads')).body) as { workloads: { name: string; enabled: boolean; rule: string; state: string; excludePorts: number[] }[] }).workloads;
  const metric = async (name: string) => {
    const line = (await api('/metrics')).body.split('\n').find((l) => l.startsWith(`${name} `));
    return line === undefined ? NaN : Number(line.split(' ')[1]);
  };
  /** A transfer in pod a that runs in three phases, driven by SIGUSR1. */
  const startTransfer = async (p: number) => {
    const child = pair.a.spawn('python3', [caseScript, 'toggle', String(p)]);
    const peer = new PeerProcess(child);
    peers.push(peer);
    await peer.waitFor((o) => o.event === 'phase' && o.n === 0);
    return peer;
  };
  const finishTransfer = async (peer: PeerProcess) => {
    peer.child.kill('SIGUSR1');
    await peer.waitFor((o) => o.event === 'phase' && o.n === 1);
    peer.child.kill('SIGUSR1');
    const out = await peer.finished();
    return out.find((o) => o.case)?.result as { intact: boolean; sent: number; got: number };
  };

  before(async () => {
    assertKernelAccess();
    pair = await createSidecarPair('agent');
    pinRoot = `/sys/fs/bpf/${pair.topo.prefix}`;
    cfgFile = pair.topo.file('agent.yaml');
    port = 20000 + Math.floor(Math.random() * 20000);
    fs.writeFileSync(cfgFile, config());
  });
  after(async () => {
    for (const p of peers) p.child.kill('SIGKILL');
    for (const a of agents) { a.child.kill('SIGKILL'); await a.exited; }
    if (fs.existsSync(pinRoot)) await runCli(['uninstall', '--config', cfgFile]);
    fs.rmSync(pinRoot, { recursive: true, force: true });
    await pair?.topo.destroy();
  });

  test('start-up refusals are one clear line and a non-zero exit', async () => {
    const bad = pair.topo.file('bad.yaml');
    fs.writeFileSync(bad, 'datapath: {crossPod: "yes"}\n');
    let r = await runCli(['agent', '--config', bad]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^sidecar-accel: config: .*datapath\.crossPod: .*boolean/);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    r = await runCli(['agent', '--config', pair.topo.file('missing.yaml')]);
    assert.match(r.stderr, /cannot read: ENOENT/);
    fs.writeFileSync(bad, config({ requireRoot: true }));
    r = await runCli(['agent', '--config', bad]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /not the host's cgroup v2 root \(id 1\)/);
    // Someone else's sockops program on the cgroup: refuse to share sockets with it.
    const foreignPins = `${pinRoot}-foreign`;
    const foreign = Datapath.open({ cgroupPath: pair.topo.cgroupDir, pinRoot: foreignPins });
    try {
      r = await runCli(['agent', '--config', cfgFile]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /another sockops program is attached to .* \(prog id \d+/);
    } finally {
      foreign.uninstall();
      fs.rmSync(foreignPins, { recursive: true, force: true });
    }
  });

  test('toggles: each workload enabled by the rule that decided, visible in the API', async () => {
    const agent = await startAgent();
    const ws = await workloads();
    assert.deepEqual(ws.map((w) => [w.name, w.enabled, w.rule, w.state]), [
      ['pod-a', true, 'pod-proxy-config', 'enabled'],
      ['pod-b', true, 'namespace-annotation', 'enabled'],
    ]);
    assert.deepEqual(ws[1]!.excludePorts, [9999]);
    assert.equal((await api('/readyz')).status, 200);
    await stopAgent(agent, 'SIGTERM');
  });

  test('config reload: good, garbage, back to good; garbage changes nothing and is counted', async () => {
    const agent = await startAgent(['--skip-self-test']);
    fs.writeFileSync(cfgFile, config({ podA: 'false' }));
    await agent.waitLog('workload state changed', (o) => o.workload === 'shop/pod-a' && o.state === 'disabled');
    assert.deepEqual((await workloads()).map((w) => w.enabled), [false, true]);
    fs.writeFileSync(cfgFile, 'workloads: [ {name: : garbage\n');
    await agent.waitLog('config rejected');
    assert.equal(await metric('sidecar_accel_config_errors_total'), 1);
    assert.deepEqual((await workloads()).map((w) => w.enabled), [false, true], 'a bad file changed the datapath');
    fs.writeFileSync(cfgFile, config({ podA: 'true', nsB: 'false' }));
    await agent.waitLog('workload state changed', (o) => o.workload === 'shop/pod-b' && o.state === 'disabled');
    assert.deepEqual((await workloads()).map((w) => [w.enabled, w.rule]), [[true, 'pod-proxy-config'], [false, 'namespace-annotation']]);
    fs.writeFileSync(cfgFile, config());
    await agent.waitLog('workload state changed', (o) => o.workload === 'shop/pod-b' && o.state === 'enabled');
    await stopAgent(agent, 'SIGTERM');
  });

  test('API: read-only, 404/405/413 for bad requests, never a 500; metrics named as documented', async () => {
    const agent = await startAgent(['--skip-self-test']);
    assert.equal((await api('/healthz')).status, 200);
    assert.equal((await api('/nope')).status, 404);
    assert.equal((await api('/v1/workloads/../../etc/passwd')).status, 404);
    const post = await api('/v1/workloads', { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } });
    assert.equal(post.status, 405);
    assert.equal(post.headers.get('allow'), 'GET, HEAD');
    assert.equal((await api('/v1/stats', { method: 'DELETE' })).status, 405);
    assert.equal((await api('/v1/workloads', { method: 'PUT', body: 'x'.repeat(10_000) })).status, 413);
    assert.equal((await api('/v1/workloads', { method: 'POST', body: '{bad json', headers: { 'content-type': 'application/json' } })).status, 400);
    assert.equal((await api('/metrics', { method: 'HEAD' })).status, 200);
    const stats = JSON.parse((await api('/v1/stats')).body) as { attached: boolean; crossPod: boolean };
    assert.equal(stats.attached, true);
    assert.equal(stats.crossPod, true);
    const text = (await api('/metrics')).body;
    for (const name of ['sidecar_accel_sockets_paired_total', 'sidecar_accel_pairing_misses_total', 'sidecar_accel_redirected_messages_total',
      'sidecar_accel_redirected_bytes_total', 'sidecar_accel_fallbacks_total', 'sidecar_accel_workloads', 'sidecar_accel_config_errors_total',
      'sidecar_accel_reconcile_errors_total']) {
      assert.match(text, new RegExp(`^# TYPE ${name} (counter|gauge)$`, 'm'), name);
    }
    assert.match(text, /^sidecar_accel_workloads\{state="enabled"\} 2$/m);
    // Map fill: the default sizes, and the two pods' four IPs known as pod addresses.
    assert.match(text, /^sidecar_accel_map_max_entries\{map="sock_hash"\} 65536$/m);
    assert.doesNotMatch(text, /map="peer_info"/, 'a map that no longer exists is reported');
    assert.match(text, /^sidecar_accel_map_entries\{map="sock_hash"\} \d+$/m);
    assert.match(text, /^sidecar_accel_map_entries\{map="pod_addrs"\} 4$/m);
    assert.match(text, /^sidecar_accel_fallbacks_total\{reason="map_full"\} \d+$/m);
    await stopAgent(agent, 'SIGTERM');
  });

  test('conns: the API and the command name the pods from the agent\'s workloads and filter by pod', async () => {
    const agent = await startAgent(['--skip-self-test']);
    const transfer = await startTransfer(9811);
    try {
      interface Conns { connections: { ends: { pod: string | null; remote: string; sends: { mode: string } }[] }[] }
      const ofTransfer = (c: Conns) => c.connections.filter((x) => x.ends.some((e) => e.remote === '127.0.0.1:9811'));
      const viaApi = await api('/v1/conns?pod=shop/pod-a');
      assert.equal(viaApi.status, 200, viaApi.body);
      const body = JSON.parse(viaApi.body) as Conns;
      assert.ok(body.connections.every((c) => c.ends.some((e) => e.pod === 'shop/pod-a')), 'a connection outside the pod');
      const [conn] = ofTransfer(body);
      assert.deepEqual(conn?.ends.map((e) => [e.pod, e.sends.mode]), [['shop/pod-a', 'redirected'], ['shop/pod-a', 'idle']]);
      assert.equal(ofTransfer(JSON.parse((await api('/v1/conns?pod=shop/pod-b')).body) as Conns).length, 0);
      const unknown = await api('/v1/conns?pod=shop/nope');
      assert.equal(unknown.status, 404);
      assert.match(unknown.body, /not an enabled pod/);
      const cli = await runCli(['conns', '--config', cfgFile, '--pod', 'shop/pod-a', '--json']);
      assert.equal(cli.code, 0, cli.stderr);
      assert.deepEqual(ofTransfer(JSON.parse(cli.stdout) as Conns).map((c) => c.ends.map((e) => e.pod)), [['shop/pod-a', 'shop/pod-a']]);
    } finally {
      assert.equal((await finishTransfer(transfer)).intact, true);
      await stopAgent(agent, 'SIGTERM');
    }
  });

  test('kill -9 during a transfer: the transfer completes intact, the next start adopts, counters keep growing', async () => {
    const agent = await startAgent(['--skip-self-test']);
    const transfer = await startTransfer(9901);
    const before = await metric('sidecar_accel_redirected_messages_total');
    assert.ok(before > 0);
    await stopAgent(agent, 'SIGKILL');
    // No agent runs: status reads the pins.
    const st = JSON.parse((await runCli(['status', '--config', cfgFile, '--json'])).stdout) as { generations: { attached: boolean; enabledNetns: unknown[] }[] };
    assert.equal(st.generations.length, 1);
    assert.equal(st.generations[0]!.attached, true);
    assert.equal(st.generations[0]!.enabledNetns.length, 2);
    const r = await finishTransfer(transfer);
    assert.equal(r.got, r.sent);
    assert.equal(r.intact, true);
    const again = await startAgent(['--skip-self-test']);
    await again.waitLog('adopted the pinned datapath');
    const after = await metric('sidecar_accel_redirected_messages_total');
    assert.ok(after > before, `counters did not survive the restart: ${before} -> ${after}`);
    await stopAgent(again, 'SIGTERM');
  });

  test('upgrade: a build with another BPF object loads a new generation; the old one drains and is unpinned', async () => {
    const agent = await startAgent(['--skip-self-test']);
    const transfer = await startTransfer(9902);
    await stopAgent(agent, 'SIGTERM');
    fs.writeFileSync(cfgFile, config({ object: variantObject }));
    const upgraded = await startAgent(['--skip-self-test']);
    await upgraded.waitLog('retired an older generation; it drains as its connections close');
    type Status = { generations: { attached: boolean; sockets: number; pinDir: string }[] };
    let st = JSON.parse((await runCli(['status', '--config', cfgFile, '--json'])).stdout) as Status;
    assert.deepEqual(st.generations.map((g) => g.attached).sort(), [false, true]);
    assert.ok(st.generations.find((g) => !g.attached)!.sockets > 0, 'the live connection is in the old generation');
    // New connections use the new generation.
    const newGen = Datapath.openPinned(st.generations.find((g) => g.attached)!.pinDir, pair.topo.cgroupDir);
    const before = newGen.netnsCounters(netnsCookieOfPath(pair.a.netnsPath))?.socketsPaired ?? 0n;
    const probe = pair.a.spawn('python3', [caseScript, 'halfclose', '9903']);
    await new PeerProcess(probe).finished();
    assert.ok((newGen.netnsCounters(netnsCookieOfPath(pair.a.netnsPath))?.socketsPaired ?? 0n) > before, 'a new connection did not pair in the new generation');
    newGen.close();
    // The old connection keeps its programs and maps and finishes intact.
    const r = await finishTransfer(transfer);
    assert.equal(r.intact, true);
    assert.equal(r.got, r.sent);
    upgraded.child.kill('SIGHUP'); // reconcile now instead of at the next resync
    await upgraded.waitLog('older generation drained and unpinned');
    st = JSON.parse((await runCli(['status', '--config', cfgFile, '--json'])).stdout) as Status;
    assert.deepEqual(st.generations.map((g) => g.attached), [true]);
    await stopAgent(upgraded, 'SIGTERM');
    fs.writeFileSync(cfgFile, config());
  });

  test('uninstall during a transfer: it completes intact, nothing stays pinned or attached', async () => {
    const agent = await startAgent(['--skip-self-test']);
    const transfer = await startTransfer(9904);
    await stopAgent(agent, 'SIGTERM');
    const u = await runCli(['uninstall', '--config', cfgFile]);
    assert.equal(u.code, 0, u.stderr);
    assert.match(u.stdout, /detached and unpinned: /);
    const r = await finishTransfer(transfer);
    assert.equal(r.intact, true);
    assert.equal(r.got, r.sent);
    assert.equal(fs.existsSync(pinRoot), false);
    const st = await runCli(['status', '--config', cfgFile]);
    assert.match(st.stdout, /nothing pinned/);
  });
});
