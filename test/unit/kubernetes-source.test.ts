// The kubernetes source against a local server speaking the API server's
// list and watch protocol: every scenario must converge to the right set of
// enabled pods (policy applied to what the source knows).
import { describe, test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import * as k8s from '@kubernetes/client-node';
import pino from 'pino';
import { FakeApiServer } from './fake-apiserver.js';
import { KubernetesSource, podIps } from '../../src/workloads/kubernetes.js';
import { decide } from '../../src/policy/policy.js';

const PODS = '/api/v1/pods';
const NSS = '/api/v1/namespaces';
const CMS = '/api/v1/namespaces/istio-system/configmaps';
const SIDECAR = { 'sidecar.istio.io/status': '{"containers":["istio-proxy"]}' };

let n = 0;
const pod = (name: string, o: { node?: string; ns?: string; ann?: Record<string, string>; labels?: Record<string, string>; hostNetwork?: boolean } = {}) => ({
  metadata: { name, namespace: o.ns ?? 'shop', uid: `00000000-0000-4000-8000-${String(++n).padStart(12, '0')}`, annotations: { ...SIDECAR, ...o.ann }, labels: o.labels ?? {} },
  spec: { nodeName: o.node ?? 'node-1', ...(o.hostNetwork ? { hostNetwork: true } : {}) },
});
const ns = (name: string, enabled?: string) => ({ metadata: { name, annotations: enabled === undefined ? {} : { 'sidecar-accel.io/enabled': enabled } } });
const meshCm = (name: string, v: string) => ({ metadata: { name, namespace: 'istio-system' }, data: { mesh: `defaultConfig:\n  proxyMetadata:\n    SIDECAR_ACCEL: "${v}"\n` } });

describe('kubernetes workload source', () => {
  let api: FakeApiServer;
  let source: KubernetesSource;
  let changes: (() => void)[] = [];

  const enabled = () => source.workloads()
    .filter((w) => decide(w, source.namespaces().get(w.namespace), source.meshFor(w)).enabled)
    .map((w) => `${w.namespace}/${w.name}`).sort();
  /** Resolves when `pred` holds, checked at every change the source reports (event-driven). */
  const until = (pred: () => boolean, what: string, ms = 10_000) => new Promise<void>((resolve, reject) => {
    if (pred()) { resolve(); return; }
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}; enabled now: ${enabled().join(', ')}`)), ms);
    const check = () => { if (pred()) { clearTimeout(timer); api.off('activity', check); resolve(); } };
    changes.push(check);
    api.on('activity', check);
  });
  const untilEnabled = (want: string[]) => until(() => JSON.stringify(enabled()) === JSON.stringify([...want].sort()), `enabled = ${want.join(', ')}`);

  beforeEach(async () => {
    api = new FakeApiServer();
    for (const p of [PODS, NSS, CMS]) api.collection(p);
    api.put(NSS, ns('shop', 'true'));
    api.put(NSS, ns('other'));
    api.put(CMS, meshCm('istio', 'false'));
    api.put(PODS, pod('a'));
    api.put(PODS, pod('b'));
    api.put(PODS, pod('elsewhere', { node: 'node-2' }));
    api.put(PODS, pod('plain', { ns: 'other' }));
    await api.start();
    const kc = new k8s.KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'fake', server: api.url, skipTLSVerify: true }],
      users: [{ name: 'agent', token: 'test' }],
      contexts: [{ name: 'fake', cluster: 'fake', user: 'agent' }],
      currentContext: 'fake',
    });
    changes = [];
    source = new KubernetesSource({
      kubeConfig: kc, nodeName: 'node-1', log: pino({ level: 'silent' }),
      onChange: () => { for (const c of [...changes]) c(); }, backoff: { initialMs: 50, maxMs: 400 },
    });
    source.start();
    await until(() => source.health().synced, 'initial sync');
  });
  afterEach(async () => {
    await source.stop();
    await api.stop();
  });

  test('initial list: only this node\'s pods, the namespace annotation decides', async () => {
    await untilEnabled(['shop/a', 'shop/b']);
    assert.deepEqual(source.workloads().map((w) => w.name).sort(), ['a', 'b', 'plain']);
    const pa = source.workloads().find((w) => w.name === 'a')!;
    assert.match('podUid' in pa.netns ? pa.netns.podUid : '', /^00000000-/);
  });

  test('added, modified and deleted pods, namespaces and mesh config converge', async () => {
    api.put(PODS, pod('c'));
    await untilEnabled(['shop/a', 'shop/b', 'shop/c']);
    const b = source.workloads().find((w) => w.name === 'b')!;
    api.put(PODS, { ...pod('b'), metadata: { ...pod('b').metadata, uid: 'podUid' in b.netns ? b.netns.podUid : '', annotations: { ...SIDECAR, 'sidecar-accel.io/enabled': 'false' } } });
    await untilEnabled(['shop/a', 'shop/c']);
    api.delete(PODS, pod('a'));
    await untilEnabled(['shop/c']);
    api.put(CMS, meshCm('istio', 'true'));
    await untilEnabled(['other/plain', 'shop/c']);
    api.put(NSS, ns('other', 'false'));
    await untilEnabled(['shop/c']);
    // Ambient and hostNetwork pods are never candidates, whatever the toggles say.
    api.put(PODS, pod('amb', { labels: { 'istio.io/dataplane-mode': 'ambient' } }));
    api.put(PODS, pod('host', { hostNetwork: true }));
    api.put(PODS, pod('d'));
    await untilEnabled(['shop/c', 'shop/d']);
  });

  test('a revisioned pod reads the istio-<rev> ConfigMap', async () => {
    api.put(CMS, meshCm('istio-canary', 'true'));
    api.put(PODS, pod('rev', { ns: 'other', labels: { 'istio.io/rev': 'canary' } }));
    await untilEnabled(['other/rev', 'shop/a', 'shop/b']);
  });

  test('a watch that ends is resumed from its resource version', async () => {
    await until(() => api.watchersOf(PODS) === 1, 'pod watch open');
    api.endWatches(PODS);
    await until(() => api.watchersOf(PODS) === 1, 'pod watch reopened');
    const rewatch = api.requests.filter((r) => r.path === PODS && r.query.get('watch') === 'true').at(-1)!;
    assert.notEqual(rewatch.query.get('resourceVersion') ?? '', '', 'resumed without a resource version');
    assert.equal(api.requests.filter((r) => r.path === PODS && r.query.get('watch') !== 'true').length, 1, 'relisted instead of resuming');
    api.put(PODS, pod('after'));
    await untilEnabled(['shop/a', 'shop/after', 'shop/b']);
  });

  test('410 Gone: relist, and changes missed meanwhile converge (deletions included)', async () => {
    await until(() => api.watchersOf(PODS) === 1, 'pod watch open');
    api.deleteSilently(PODS, pod('a'));
    api.putSilently(PODS, pod('missed'));
    api.gone(PODS);
    await untilEnabled(['shop/b', 'shop/missed']);
    assert.equal(api.requests.filter((r) => r.path === PODS && r.query.get('watch') !== 'true').length, 2, 'no relist after 410');
  });

  test('bookmarks move the resource version the next watch resumes from', async () => {
    await until(() => api.watchersOf(PODS) === 1, 'pod watch open');
    // The bookmark is written before the watch ends, on the same stream: the
    // client reads it first, so it must resume exactly there.
    const rv = api.bookmark(PODS);
    api.endWatches(PODS);
    await until(() => api.watchersOf(PODS) === 1, 'pod watch reopened');
    const rewatch = api.requests.filter((r) => r.path === PODS && r.query.get('watch') === 'true').at(-1)!;
    assert.equal(rewatch.query.get('resourceVersion'), rv);
    api.put(PODS, pod('x'));
    await untilEnabled(['shop/a', 'shop/b', 'shop/x']);
  });

  test('an API server outage keeps the last known state, then converges with backoff', async () => {
    await untilEnabled(['shop/a', 'shop/b']);
    const port = api.port;
    await api.stop();
    await until(() => source.health().errors > 0, 'the outage noticed');
    assert.deepEqual(enabled(), ['shop/a', 'shop/b'], 'an outage changed what is enabled');
    assert.match(source.health().lastError ?? '', /ECONNREFUSED|fetch failed|connect|socket/i);
    // Changes while the agent cannot see them: the server replays them from
    // the resource version the source resumes from.
    api.put(PODS, pod('during'));
    api.delete(PODS, pod('b'));
    await api.start(port);
    await untilEnabled(['shop/a', 'shop/during']);
  });
});

test('a pod\'s IPs come from status.podIPs, else status.podIP; none before the kubelet reports them', () => {
  assert.deepEqual(podIps({ podIP: '10.1.0.5', podIPs: [{ ip: '10.1.0.5' }, { ip: 'fd00::5' }] }), ['10.1.0.5', 'fd00::5']);
  assert.deepEqual(podIps({ podIP: '10.1.0.6' }), ['10.1.0.6']);
  assert.deepEqual(podIps({}), []);
  assert.deepEqual(podIps(undefined), []);
});
