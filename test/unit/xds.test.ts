// The xds source and its Delta xDS client against an in-process xDS server:
// every protocol rule (first request, ACK, NACK with the valid resources
// applied and the last good version kept, removal, server close and
// reconnect with initial_resource_versions, backoff growth and reset), an
// unreachable server, a server that does not serve the type, TLS with a
// bearer token, and arbitrary bytes from the server.
import { describe, test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { execFileSync, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { FakeXdsServer, workloadResource, type FakeStream } from './fake-xds.js';
import { XdsSource, type XdsConnection } from '../../src/workloads/xds.js';
import type { StreamEnd } from '../../src/xds/delta-client.js';
import { backoffDelay } from '../../src/util/backoff.js';
import { ADDRESS_TYPE_URL, podWorkloadUid } from '../../src/xds/workload-api.js';
import type { Workload } from '../../src/workloads/workload.js';

const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');
const NODE = 'node-1';
const IDENTITY = { nodeName: NODE, clusterId: 'Kubernetes', podName: 'sidecar-accel-x1', podNamespace: 'sidecar-accel', podIp: '10.0.0.9' };
const uid = (name: string) => podWorkloadUid('Kubernetes', 'shop', name);
const pod = (name: string): Workload => ({ uid: `k8s-${name}`, name, namespace: 'shop', annotations: {}, labels: {}, netns: { podUid: name, ips: [] }, source: 'kubernetes' });

/** A logger whose lines the test can read. */
function memoryLog(): { log: pino.Logger; lines: { msg: string }[] } {
  const lines: { msg: string }[] = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => { lines.push(JSON.parse(s) as { msg: string }); } });
  return { log, lines };
}

/** Resolves at the first event `name` of `em` that satisfies `pred`. */
function next<T>(em: { on(e: string, f: (x: T) => void): unknown; off(e: string, f: (x: T) => void): unknown }, name: string, pred: (x: T) => boolean = () => true, ms = 10_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { em.off(name, on); reject(new Error(`no ${name} event within ${ms} ms`)); }, ms);
    timer.unref();
    const on = (x: T) => { if (pred(x)) { clearTimeout(timer); em.off(name, on); resolve(x); } };
    em.on(name, on);
  });
}

describe('xds source', () => {
  const cleanups: (() => void)[] = [];
  afterEach(() => { for (const c of cleanups.splice(0).reverse()) c(); });

  async function setup(o: { noAnswerMs?: number; backoff?: { initialMs: number; maxMs: number }; server?: FakeXdsServer; connection?: Partial<XdsConnection> } = {}) {
    const server = o.server ?? new FakeXdsServer();
    const address = server.port ? `127.0.0.1:${server.port}` : await server.start();
    cleanups.push(() => server.stop());
    const { log, lines } = memoryLog();
    let changes = 0;
    const source = new XdsSource({
      connection: { address, plaintext: true, ...o.connection }, identity: IDENTITY, log, onChange: () => { changes++; },
      backoff: o.backoff ?? { initialMs: 20, maxMs: 200 }, noAnswerMs: o.noAnswerMs ?? 10_000,
    });
    cleanups.push(() => source.stop());
    source.start();
    return { server, source, lines, changes: () => changes };
  }

  test('first request: node identity of a node-level client, the workload type, nothing held yet', async () => {
    const { server } = await setup();
    const s = await server.stream(1);
    const r = await s.request(0);
    assert.equal(r.type_url, ADDRESS_TYPE_URL);
    assert.equal(r.node?.id, 'ztunnel~10.0.0.9~sidecar-accel-x1.sidecar-accel~sidecar-accel.svc.cluster.local');
    const md = r.node?.metadata?.fields ?? {};
    assert.equal(md.NODE_NAME?.stringValue, NODE);
    assert.equal(md.NAMESPACE?.stringValue, 'sidecar-accel');
    assert.equal(md.CLUSTER_ID?.stringValue, 'Kubernetes');
    assert.deepEqual(r.initial_resource_versions, {});
    assert.equal(r.response_nonce, '');
    assert.deepEqual(r.resource_names_subscribe, []);
  });

  test('ACK with the nonce; keeps only the workloads of this node, joined to pods by uid', async () => {
    const { server, source } = await setup();
    const s = await server.stream(1);
    await s.request(0);
    const nonce = s.send({ resources: [
      workloadResource({ uid: uid('a'), name: 'a', namespace: 'shop', node: NODE, canonical_name: 'reviews', canonical_revision: 'v2', addresses: [Buffer.from([10, 1, 0, 5])] }),
      workloadResource({ uid: uid('far'), name: 'far', namespace: 'shop', node: 'node-2' }),
    ] });
    const ack = await s.request(1);
    assert.equal(ack.response_nonce, nonce);
    assert.equal(ack.error_detail, null);
    assert.deepEqual(source.workloadsOnNode().map((w) => w.uid), [uid('a')]);
    const a = source.meshWorkloadOf(pod('a'));
    assert.equal(a?.canonicalName, 'reviews');
    assert.equal(a?.canonicalRevision, 'v2');
    assert.deepEqual(a?.addresses, ['10.1.0.5']);
    assert.equal(source.meshWorkloadOf(pod('far')), undefined);
    assert.equal(source.health().state, 'serving');
  });

  test('NACK of a garbage Any and of an invalid resource; the good ones applied, the last good version kept', async () => {
    const { server, source } = await setup();
    const s = await server.stream(1);
    await s.request(0);
    s.send({ resources: [workloadResource({ uid: uid('a'), node: NODE, canonical_revision: 'v1' }, '1')] });
    assert.equal((await s.request(1)).error_detail, null);
    const nonce = s.send({ resources: [
      // Truncated bytes: field 1, length 5, one byte present.
      { name: uid('garbage'), version: '1', resource: { type_url: ADDRESS_TYPE_URL, value: Buffer.from([0x0a, 0x05, 0x01]) }, aliases: [] },
      { name: uid('wrong-type'), version: '1', resource: { type_url: 'type.googleapis.com/envoy.config.cluster.v3.Cluster', value: Buffer.alloc(0) }, aliases: [] },
      // Valid bytes, invalid resource: an address of 5 bytes; and a new version of `a` named by the wrong uid.
      workloadResource({ uid: uid('bad-ip'), node: NODE, addresses: [Buffer.from([1, 2, 3, 4, 5])] }),
      workloadResource({ uid: uid('someone-else'), node: NODE, canonical_revision: 'v2' }, '2', uid('a')),
      workloadResource({ uid: uid('b'), node: NODE, canonical_revision: 'v7' }),
    ] });
    const nack = await s.request(2);
    assert.equal(nack.response_nonce, nonce);
    assert.equal(nack.error_detail?.code, grpc.status.INVALID_ARGUMENT);
    for (const bad of ['garbage', 'wrong-type', 'bad-ip']) assert.match(nack.error_detail?.message ?? '', new RegExp(uid(bad).replace(/[/]/g, '\\/')));
    assert.match(nack.error_detail?.message ?? '', /not the workload uid/);
    assert.equal(source.meshWorkloadOf(pod('b'))?.canonicalRevision, 'v7', 'the valid resource is applied');
    assert.equal(source.meshWorkloadOf(pod('a'))?.canonicalRevision, 'v1', 'a rejected update keeps the last good version');
    assert.equal(source.meshWorkloadOf(pod('bad-ip')), undefined);
    assert.deepEqual(source.client.versions(), { [uid('a')]: '1', [uid('b')]: '1' });
    assert.equal(source.health().nacks, 1);
    // Thousands of bad resources: the NACK names them within a bounded message.
    s.send({ resources: Array.from({ length: 2000 }, (_, i) => ({ name: uid(`bad-${'x'.repeat(40)}-${i}`), version: '1', resource: { type_url: 'wrong', value: Buffer.alloc(0) }, aliases: [] })) });
    const big = await s.request(3);
    assert.ok((big.error_detail?.message?.length ?? 0) <= 4096 + 40, `NACK message of ${big.error_detail?.message?.length} chars`);
    assert.match(big.error_detail?.message ?? '', /\(2000 resources rejected\)$/);
  });

  test('removed_resources are dropped', async () => {
    const { server, source } = await setup();
    const s = await server.stream(1);
    await s.request(0);
    s.send({ resources: [workloadResource({ uid: uid('a'), node: NODE }), workloadResource({ uid: uid('b'), node: NODE })] });
    await s.request(1);
    s.send({ removed_resources: [uid('a'), uid('never-seen')] });
    assert.equal((await s.request(2)).error_detail, null);
    assert.deepEqual(source.workloadsOnNode().map((w) => w.uid), [uid('b')]);
    assert.deepEqual(Object.keys(source.client.versions()), [uid('b')]);
  });

  test('a stream the server closes after responses is normal: reconnect with initial_resource_versions', async () => {
    const { server, source, lines } = await setup();
    const s1 = await server.stream(1);
    await s1.request(0);
    s1.send({ resources: [workloadResource({ uid: uid('a'), node: NODE }, '5'), workloadResource({ uid: uid('b'), node: NODE }, '9')] });
    await s1.request(1);
    const ended = next<StreamEnd>(source.client, 'end');
    s1.close(grpc.status.OK);
    const end = await ended;
    assert.equal(end.failure, false);
    assert.equal(end.responses, 1);
    const s2 = await server.stream(2);
    const first = await s2.request(0);
    assert.deepEqual(first.initial_resource_versions, { [uid('a')]: '5', [uid('b')]: '9' });
    assert.equal(first.node?.id?.startsWith('ztunnel~'), true, 'every stream starts with the node');
    assert.deepEqual(source.workloadsOnNode().map((w) => w.uid).sort(), [uid('a'), uid('b')], 'held while reconnecting');
    assert.equal(lines.filter((l) => /stream failed/.test(l.msg)).length, 0, 'not logged as a failure');
  });

  test('backoff grows while streams fail without a response and resets after a response', async () => {
    const server = new FakeXdsServer();
    await server.start();
    let script: ((s: FakeStream) => void) = (s) => s.close(grpc.status.UNAVAILABLE, 'overloaded');
    server.on('stream', (s) => script(s));
    const { source } = await setup({ server, backoff: { initialMs: 40, maxMs: 2000 } });
    const ends: StreamEnd[] = [];
    source.client.on('end', (e) => ends.push(e));
    await next<StreamEnd>(source.client, 'end', () => ends.length >= 4);
    ends.slice(0, 4).forEach((e, i) => {
      assert.equal(e.failure, true);
      const base = 40 * 2 ** i;
      assert.ok(e.retryInMs >= base / 2 && e.retryInMs <= base, `failure ${i + 1}: ${e.retryInMs} ms not in [${base / 2}, ${base}]`);
    });
    // One stream that answers, then fails: the answer resets the backoff.
    script = (s) => { void s.request(0).then(() => { s.send({}); return s.request(1); }).then(() => { script = (x) => x.close(grpc.status.UNAVAILABLE, 'again'); s.close(grpc.status.INTERNAL, 'boom'); }); };
    const answered = await next<StreamEnd>(source.client, 'end', (e) => e.responses > 0);
    assert.equal(answered.failure, false);
    const after = await next<StreamEnd>(source.client, 'end', (e) => e.failure);
    assert.ok(after.retryInMs >= 20 && after.retryInMs <= 40, `first failure after a response waits ${after.retryInMs} ms, expected [20, 40]`);
    assert.ok(backoffDelay({ initialMs: 40, maxMs: 100 }, 10, () => 1) === 100, 'capped at maxMs');
  });

  test('an unreachable server at start: says so, keeps retrying, and recovers when it comes up', async () => {
    const port = await new Promise<number>((resolve) => { const s = net.createServer().listen(0, '127.0.0.1', () => { const p = (s.address() as net.AddressInfo).port; s.close(() => resolve(p)); }); });
    const { log, lines } = memoryLog();
    const source = new XdsSource({ connection: { address: `127.0.0.1:${port}`, plaintext: true }, identity: IDENTITY, log, onChange: () => {}, backoff: { initialMs: 20, maxMs: 100 }, noAnswerMs: 300 });
    cleanups.push(() => source.stop());
    source.start();
    await next<StreamEnd>(source.client, 'end', (e) => e.code === grpc.status.UNAVAILABLE);
    await new Promise<void>((resolve) => { const t = setInterval(() => { if (source.health().state === 'unreachable') { clearInterval(t); resolve(); } }, 20); });
    assert.equal(lines.filter((l) => /istiod unreachable/.test(l.msg)).length, 1, 'said once');
    const server = new FakeXdsServer();
    cleanups.push(() => server.stop());
    await server.start(undefined, port);
    const s = await server.stream(1);
    await s.request(0);
    s.send({ resources: [workloadResource({ uid: uid('a'), node: NODE })] });
    await s.request(1);
    assert.equal(source.health().state, 'serving');
    assert.equal(source.workloadsOnNode().length, 1);
  });

  test('a server without the ADS service (UNIMPLEMENTED): not served, said once, no crash', async () => {
    const server = new FakeXdsServer({ withAds: false });
    await server.start();
    const { source, lines } = await setup({ server, backoff: { initialMs: 10, maxMs: 40 } });
    const ends: StreamEnd[] = [];
    source.client.on('end', (e) => ends.push(e));
    await next<StreamEnd>(source.client, 'end', () => ends.length >= 3);
    assert.ok(ends.every((e) => e.code === grpc.status.UNIMPLEMENTED && e.failure));
    assert.equal(source.health().state, 'not-served');
    assert.equal(lines.filter((l) => /serves no workload API/.test(l.msg)).length, 1, 'said once');
    assert.deepEqual(source.workloadsOnNode(), []);
  });

  test('a server that does not know the type never answers: not served after the quiet period', async () => {
    const { server, source, lines } = await setup({ noAnswerMs: 200 });
    const s = await server.stream(1);
    await s.request(0);
    await new Promise<void>((resolve) => { const t = setInterval(() => { if (source.health().state === 'not-served') { clearInterval(t); resolve(); } }, 20); });
    assert.equal(lines.filter((l) => /serves no workload API/.test(l.msg)).length, 1);
    // It answers later (ambient turned on): served from then on.
    s.send({ resources: [workloadResource({ uid: uid('a'), node: NODE })] });
    await s.request(1);
    assert.equal(source.health().state, 'serving');
  });

  test('no crash on arbitrary bytes: random envelopes end the stream, random resources are NACKed or applied', async () => {
    const server = new FakeXdsServer();
    await server.start();
    const { source } = await setup({ server, backoff: { initialMs: 5, maxMs: 20 } });
    const rnd = (n: number) => crypto.randomBytes(n);
    // Envelopes: random bytes as a response, 30 times. Bytes that happen to
    // decode are answered on the stream; the rest end it (INTERNAL).
    let streams = 1;
    let ended = 0;
    for (let i = 0; i < 30; i++) {
      const s = await server.stream(streams);
      const n = s.requests.length;
      await s.request(n - 1 < 0 ? 0 : n - 1);
      s.sendRaw(rnd(1 + (i * 7) % 200));
      const outcome = await Promise.race([next<StreamEnd>(source.client, 'end').then(() => 'end'), s.request(Math.max(n, 1)).then(() => 'answered')]);
      if (outcome === 'end') { streams++; ended++; }
    }
    assert.ok(ended > 0, 'undecodable envelopes end the stream');
    // Resources: 300 random Any values over 10 responses, then a good one.
    const s = await server.stream(streams);
    await s.request(0);
    const base = s.requests.length;
    await s.request(0);
    let acked = 0;
    for (let round = 0; round < 10; round++) {
      const nonce = s.send({ resources: Array.from({ length: 30 }, (_, i) => ({ name: `r${round}-${i}`, version: '1', resource: { type_url: ADDRESS_TYPE_URL, value: rnd(i * 3) }, aliases: [] })) });
      const reply = await s.request(base + round);
      assert.equal(reply.response_nonce, nonce);
      if (!reply.error_detail) acked++;
    }
    assert.ok(acked < 10, 'random resources are rejected');
    const nonce = s.send({ resources: [workloadResource({ uid: uid('ok'), node: NODE })] });
    const reply = await s.request(base + 10);
    assert.equal(reply.response_nonce, nonce);
    assert.equal(reply.error_detail, null);
    assert.ok(source.meshWorkloadOf(pod('ok')));
  });

  test('TLS with the CA file, and the projected token as a bearer token', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sa-xds-tls-'));
    cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
      '-subj', '/CN=istiod.istio-system.svc', '-addext', 'subjectAltName=DNS:istiod.istio-system.svc',
      '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem')], { stdio: 'ignore' });
    const token = `tok-${crypto.randomUUID()}`;
    fs.writeFileSync(path.join(dir, 'token'), `${token}\n`);
    const server = new FakeXdsServer();
    const cert = fs.readFileSync(path.join(dir, 'cert.pem'));
    await server.start(grpc.ServerCredentials.createSsl(null, [{ private_key: fs.readFileSync(path.join(dir, 'key.pem')), cert_chain: cert }]));
    // The CA file is not there yet (its ConfigMap not mounted yet): retried, not fatal.
    const caFile = path.join(dir, 'ca.pem');
    const { source } = await setup({ server, connection: { plaintext: false, caFile, tokenFile: path.join(dir, 'token'), serverName: 'istiod.istio-system.svc' } });
    const noCa = await next<StreamEnd>(source.client, 'end');
    assert.match(noCa.details, /credentials: .*ENOENT/);
    fs.copyFileSync(path.join(dir, 'cert.pem'), caFile);
    const s = await server.stream(1);
    await s.request(0);
    assert.deepEqual(s.call.metadata.get('authorization'), [`Bearer ${token}`]);
    s.send({ resources: [workloadResource({ uid: uid('a'), node: NODE })] });
    await s.request(1);
    assert.equal(source.health().state, 'serving');

    // A CA that did not sign istiod's certificate: no stream ever reaches the server.
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
      '-subj', '/CN=other', '-keyout', path.join(dir, 'k2.pem'), '-out', path.join(dir, 'other.pem')], { stdio: 'ignore' });
    const { log } = memoryLog();
    const wrong = new XdsSource({ connection: { address: `127.0.0.1:${server.port}`, plaintext: false, caFile: path.join(dir, 'other.pem'), serverName: 'istiod.istio-system.svc' },
      identity: IDENTITY, log, onChange: () => {}, backoff: { initialMs: 20, maxMs: 50 }, noAnswerMs: 5000 });
    cleanups.push(() => wrong.stop());
    wrong.start();
    const end = await next<StreamEnd>(wrong.client, 'end');
    assert.equal(end.code, grpc.status.UNAVAILABLE);
    assert.equal(server.streams.length, 1);
  });

  test('xds-dump prints what arrives, ACKs and NACKs like the agent, one JSON object per line', async () => {
    const server = new FakeXdsServer();
    const address = await server.start();
    cleanups.push(() => server.stop());
    const child = spawn(process.execPath, [cli, 'xds-dump', '--server', address, '--plaintext', '--json', '--count', '2', '--node', NODE], { stdio: ['ignore', 'pipe', 'pipe'] });
    cleanups.push(() => child.kill('SIGKILL'));
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    const s = await server.stream(1);
    assert.match((await s.request(0)).node?.id ?? '', /^ztunnel~/);
    const good = s.send({ resources: [workloadResource({ uid: uid('a'), node: NODE, tunnel_protocol: 'HBONE', canonical_name: 'ratings' })] });
    assert.equal((await s.request(1)).response_nonce, good);
    const bad = s.send({ resources: [{ name: uid('junk'), version: '3', resource: { type_url: ADDRESS_TYPE_URL, value: Buffer.from([0x0a, 0x05, 0x01]) }, aliases: [] }], removed_resources: [uid('a')] });
    const nack = await s.request(2);
    assert.equal(nack.response_nonce, bad);
    assert.ok(nack.error_detail?.message?.includes(uid('junk')));
    assert.equal(await exited, 0, 'exits after --count responses');
    const lines = out.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.deepEqual(lines.map((l) => l.event), ['stream', 'response', 'resource', 'ack', 'response', 'invalid', 'removed', 'nack']);
    const res = lines[2] as { address: { kind: string; workload: { tunnel: string; canonicalName: string } } };
    assert.equal(res.address.workload.tunnel, 'HBONE');
    assert.equal(res.address.workload.canonicalName, 'ratings');
    assert.equal(lines[6]!.name, uid('a'));
  });

  test('xds-dump against a server without the workload API (UNIMPLEMENTED): says so in the agent\'s words, exits 1', async () => {
    const server = new FakeXdsServer({ withAds: false });
    const address = await server.start();
    cleanups.push(() => server.stop());
    const child = spawn(process.execPath, [cli, 'xds-dump', '--server', address, '--plaintext', '--node', NODE], { stdio: ['ignore', 'pipe', 'pipe'] });
    cleanups.push(() => child.kill('SIGKILL'));
    let err = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => { err += d; });
    const code = await new Promise<number | null>((resolve, reject) => {
      // Without the answer it would retry for ever: a bound, not a synchronisation.
      const timer = setTimeout(() => reject(new Error(`xds-dump still running after 10 s; stderr: ${err}`)), 10_000);
      child.on('exit', (c) => { clearTimeout(timer); resolve(c); });
    });
    assert.equal(code, 1, err);
    assert.match(err, new RegExp(`^sidecar-accel: istiod serves no workload API at ${address} \\(gRPC UNIMPLEMENTED`));
    assert.equal(err.trim().split('\n').length, 1, err);
  });

  test('xds-dump: bad arguments are usage errors, exit 2', () => {
    for (const args of [[], ['--server', 'no-port'], ['--server', 'x:1', '--count', '0'], ['--server', 'x:1', '--plaintext', '--token', '/t']]) {
      let code = 0;
      let err = '';
      try { execFileSync(process.execPath, [cli, 'xds-dump', ...args], { stdio: 'pipe' }); } catch (e) { code = (e as { status: number }).status; err = String((e as { stderr: Buffer }).stderr); }
      assert.equal(code, 2, `xds-dump ${args.join(' ')}: ${err}`);
      assert.match(err, /xds-dump/);
    }
  });
});
