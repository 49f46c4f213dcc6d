// istiod's view joined onto the pods, and what the reconciler writes from it:
// HBONE pods off, canonical labels, and cross-pod eligibility per netns.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import { joinMesh } from '../../src/workloads/join.js';
import { reconcileOnce, type EnableOptions, type KernelTarget } from '../../src/reconcile/reconciler.js';
import type { NetnsPolicy } from '../../src/datapath/layout.js';
import type { MeshWorkload } from '../../src/xds/workload-api.js';
import type { XdsHealth, XdsState } from '../../src/workloads/xds.js';
import type { Workload } from '../../src/workloads/workload.js';

const SIDECAR = { 'sidecar.istio.io/status': '{}', 'sidecar-accel.io/enabled': 'true' };
const pod = (name: string, labels: Record<string, string> = {}): Workload => ({
  uid: `uid-${name}`, name, namespace: 'shop', annotations: SIDECAR, labels, netns: { podUid: name, ips: [] }, source: 'kubernetes',
});
const local: Workload = { uid: 'l', name: 'local', namespace: 'shop', annotations: SIDECAR, labels: {}, netns: { path: '/x' }, source: 'local' };
const mesh = (name: string, o: Partial<MeshWorkload> = {}): MeshWorkload => ({
  uid: `Kubernetes//Pod/shop/${name}`, name, namespace: 'shop', node: 'node-1', tunnel: 'NONE', canonicalName: '', canonicalRevision: '',
  serviceAccount: '', trustDomain: '', clusterId: '', network: '', addresses: [], ...o,
});
function xds(state: XdsState, known: MeshWorkload[]) {
  const health = (): XdsHealth => ({ state, responses: 0, acks: 0, nacks: 0, workloadsOnNode: known.length });
  return { health, meshWorkloadOf: (w: Workload) => known.find((m) => m.name === w.name) };
}

test('no xds source: every pod is a known mesh workload; canonical names from the injector labels', () => {
  const [a] = joinMesh([pod('a', { 'service.istio.io/canonical-name': 'reviews', 'service.istio.io/canonical-revision': 'v1' })], undefined);
  assert.deepEqual([a!.meshKnown, a!.canonicalService, a!.canonicalRevision, a!.tunnel], [true, 'reviews', 'v1', undefined]);
});

test('xds connecting: membership of kubernetes pods unknown; local workloads known', () => {
  const out = joinMesh([pod('a'), local], xds('connecting', [mesh('a')]));
  assert.deepEqual(out.map((w) => w.meshKnown), [undefined, true]);
});

test('xds not served or unreachable: the API server\'s pods are the mesh workloads', () => {
  for (const s of ['not-served', 'unreachable'] as const) assert.equal(joinMesh([pod('a')], xds(s, []))[0]!.meshKnown, true, s);
});

test('xds serving: istiod\'s record decides tunnel, canonical labels and membership', () => {
  const out = joinMesh([pod('a', { 'service.istio.io/canonical-name': 'from-label' }), pod('b'), pod('c', { 'service.istio.io/canonical-name': 'label-c' })],
    xds('serving', [mesh('a', { canonicalName: 'reviews', canonicalRevision: 'v2' }), mesh('b', { tunnel: 'HBONE' })]));
  assert.deepEqual(out.map((w) => [w.name, w.meshKnown, w.tunnel, w.canonicalService, w.canonicalRevision]), [
    ['a', true, 'NONE', 'reviews', 'v2'],
    ['b', true, 'HBONE', '', ''],
    ['c', false, undefined, 'label-c', ''],
  ]);
});

test('the reconciler: HBONE off, cross-pod per netns, a shared netns with an unknown workload stays in-pod', () => {
  const writes: [bigint, EnableOptions][] = [];
  const map = new Map<bigint, NetnsPolicy>();
  const target: KernelTarget = {
    enable: (c, o) => { writes.push([c, o]); map.set(c, { enabled: true, ...o }); },
    disable: (c) => map.delete(c),
    enabledNetns: () => new Map(map),
  };
  const cookies: Record<string, bigint> = { a: 1n, b: 2n, c: 3n, d: 3n };
  const workloads = joinMesh([pod('a'), pod('b'), pod('c'), pod('d')], xds('serving', [mesh('a'), mesh('b', { tunnel: 'HBONE' }), mesh('c')]));
  const r = reconcileOnce(target, { workloads, namespaces: new Map(), meshFor: () => undefined }, pino({ level: 'silent' }), new Map(),
    (w) => cookies[w.name]!);
  assert.deepEqual(r.statuses.map((s) => [s.name, s.enabled, s.rule, s.crossPod]), [
    ['a', true, 'pod-annotation', true],
    ['b', false, 'xds-hbone', false],
    ['c', true, 'pod-annotation', false],
    ['d', true, 'pod-annotation', false],
  ]);
  assert.deepEqual(writes, [[1n, { excludePorts: [], crossPod: true, addressesKnown: false, outboundDirect: false, inboundDirect: false }], [3n, { excludePorts: [], crossPod: false, addressesKnown: false, outboundDirect: false, inboundDirect: false }]]);
  // Level-triggered: istiod learns d; the shared netns is rewritten with the flag, nothing else.
  writes.length = 0;
  const again = joinMesh([pod('a'), pod('b'), pod('c'), pod('d')], xds('serving', [mesh('a'), mesh('b', { tunnel: 'HBONE' }), mesh('c'), mesh('d')]));
  reconcileOnce(target, { workloads: again, namespaces: new Map(), meshFor: () => undefined }, pino({ level: 'silent' }), new Map(), (w) => cookies[w.name]!);
  assert.deepEqual(writes, [[3n, { excludePorts: [], crossPod: true, addressesKnown: false, outboundDirect: false, inboundDirect: false }]]);
});

test('the reconciler publishes each pod address with its netns; one two netns claim, or a hostNetwork pod\'s, is left out', () => {
  const published: Map<string, bigint>[] = [];
  const prunes: boolean[] = [];
  const target: KernelTarget = {
    enable: () => {}, disable: () => true, enabledNetns: () => new Map(),
    setPodAddresses: (want, o) => { published.push(new Map(want)); prunes.push(o.prune); },
  };
  const k8s = (name: string, ips: string[], extra: Partial<Workload> = {}): Workload => ({ ...pod(name), netns: { podUid: name, ips }, ...extra });
  const workloads = [
    k8s('a', ['10.0.0.1', 'fd00::1']), k8s('b', ['10.0.0.2']), k8s('c', ['10.0.0.2']),
    k8s('h', ['192.168.1.10'], { hostNetwork: true }), { ...local, ips: ['10.0.0.9'] },
  ];
  const cookies: Record<string, bigint> = { a: 1n, b: 2n, c: 3n, h: 4n, [local.name]: 5n };
  reconcileOnce(target, { workloads, namespaces: new Map(), meshFor: () => undefined }, pino({ level: 'silent' }), new Map(), (w) => cookies[w.name]!);
  assert.deepEqual([...published[0]!], [['10.0.0.1', 1n], ['fd00::1', 1n], ['10.0.0.9', 5n]]);
  reconcileOnce(target, { workloads, namespaces: new Map(), meshFor: () => undefined, complete: false }, pino({ level: 'silent' }), new Map(), (w) => cookies[w.name]!);
  assert.deepEqual(prunes, [true, false], 'a source still listing removes no address');
});

test('a netns is marked addresses-known only when every workload in it has addresses, all its own, written before the policy', () => {
  const calls: string[] = [];
  const target: KernelTarget = {
    enable: (c, o) => { calls.push(`enable ${c} ${o.addressesKnown}`); },
    disable: () => true, enabledNetns: () => new Map(),
    setPodAddresses: () => { calls.push('addresses'); },
  };
  const k8s = (name: string, ips: string[]): Workload => ({ ...pod(name), netns: { podUid: name, ips } });
  // a: its own address; b and c share a netns, c has none; d and e claim one address.
  const workloads = [k8s('a', ['10.0.0.1', 'fd00::1']), k8s('b', ['10.0.0.2']), k8s('c', []), k8s('d', ['10.0.0.4']), k8s('e', ['10.0.0.4'])];
  const cookies: Record<string, bigint> = { a: 1n, b: 2n, c: 2n, d: 4n, e: 5n };
  reconcileOnce(target, { workloads, namespaces: new Map(), meshFor: () => undefined }, pino({ level: 'silent' }), new Map(), (w) => cookies[w.name]!);
  assert.deepEqual(calls, ['addresses', 'enable 1 true', 'enable 2 false', 'enable 4 false', 'enable 5 false']);
  // A target that cannot hold addresses never gets the flag.
  const bare: string[] = [];
  reconcileOnce({ enable: (c, o) => { bare.push(`enable ${c} ${o.addressesKnown}`); }, disable: () => true, enabledNetns: () => new Map() },
    { workloads: [k8s('a', ['10.0.0.1'])], namespaces: new Map(), meshFor: () => undefined }, pino({ level: 'silent' }), new Map(), () => 1n);
  assert.deepEqual(bare, ['enable 1 false']);
});

function fakeKernel(initial: [bigint, NetnsPolicy][] = []) {
  const writes: [bigint, EnableOptions][] = [];
  const disabled: bigint[] = [];
  const map = new Map<bigint, NetnsPolicy>(initial);
  const target: KernelTarget = {
    enable: (c, o) => { writes.push([c, o]); map.set(c, { enabled: true, ...o }); },
    disable: (c) => { disabled.push(c); return map.delete(c); },
    enabledNetns: () => new Map(map),
  };
  return { target, writes, disabled, map };
}

test('membership not known yet (agent restart, istiod not answered): the kernel\'s cross-pod flag stays; a new netns starts in-pod', () => {
  const k = fakeKernel([[1n, { enabled: true, excludePorts: [], crossPod: true }], [2n, { enabled: true, excludePorts: [], crossPod: false }]]);
  const cookies: Record<string, bigint> = { a: 1n, b: 2n, c: 3n };
  const workloads = joinMesh([pod('a'), pod('b'), pod('c')], xds('connecting', []));
  const r = reconcileOnce(k.target, { workloads, namespaces: new Map(), meshFor: () => undefined }, pino({ level: 'silent' }), new Map(), (w) => cookies[w.name]!);
  assert.deepEqual(r.statuses.map((s) => [s.name, s.crossPod]), [['a', true], ['b', false], ['c', false]]);
  assert.deepEqual(k.writes, [[3n, { excludePorts: [], crossPod: false, addressesKnown: false, outboundDirect: false, inboundDirect: false }]], 'only the new netns is written');
});

test('an incomplete desired state (a source still listing) disables nothing it does not list', () => {
  const k = fakeKernel([[1n, { enabled: true, excludePorts: [], crossPod: true }], [2n, { enabled: true, excludePorts: [], crossPod: true }]]);
  const off: Workload = { ...local, annotations: { ...SIDECAR, 'sidecar-accel.io/enabled': 'false' } };
  reconcileOnce(k.target, { workloads: [off], namespaces: new Map(), meshFor: () => undefined, complete: false }, pino({ level: 'silent' }), new Map(), () => 2n);
  assert.deepEqual(k.disabled, [2n], 'a netns a listed workload turns off is disabled; the unlisted one stays');
  assert.deepEqual([...k.map.keys()], [1n]);
  reconcileOnce(k.target, { workloads: [], namespaces: new Map(), meshFor: () => undefined, complete: true }, pino({ level: 'silent' }), new Map(), () => 2n);
  assert.deepEqual(k.disabled, [2n, 1n], 'once complete, what nothing asks for is disabled');
});


test('a netns is marked outbound (inbound) direct only when every workload in it says its sidecar captures none of it', () => {
  const calls: string[] = [];
  const target: KernelTarget = {
    enable: (c, o) => { calls.push(`enable ${c} out ${o.outboundDirect} in ${o.inboundDirect}`); },
    disable: () => true, enabledNetns: () => new Map(),
  };
  const annotated = (name: string, annotations: Record<string, string>): Workload => {
    const w = pod(name);
    return { ...w, annotations: { ...w.annotations, ...annotations } };
  };
  const workloads = [
    annotated('a', { 'sidecar.istio.io/interceptionMode': 'NONE' }),
    annotated('b', { 'traffic.sidecar.istio.io/includeOutboundIPRanges': '' }),
    // Shares b's netns but captures its outbound: the netns is not direct.
    annotated('c', {}),
    annotated('d', { 'traffic.sidecar.istio.io/includeInboundPorts': ' ' }),
  ];
  const cookies: Record<string, bigint> = { a: 1n, b: 2n, c: 2n, d: 4n };
  const r = reconcileOnce(target, { workloads, namespaces: new Map(), meshFor: () => undefined }, pino({ level: 'silent' }), new Map(), (w) => cookies[w.name]!);
  assert.deepEqual(calls, ['enable 1 out true in true', 'enable 2 out false in false', 'enable 4 out false in true']);
  // Each workload's status (the API's /v1/workloads) says what its netns was enabled with.
  assert.deepEqual(r.statuses.map((s) => `${s.name} out ${s.outboundDirect} in ${s.inboundDirect}`),
    ['a out true in true', 'b out false in false', 'c out false in false', 'd out false in true']);
});
