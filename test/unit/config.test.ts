// The agent config: defaults, and a precise error for each kind of bad input.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfig } from '../../src/config/load.js';
import { ConfigWatcher } from '../../src/config/watch.js';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

test('an empty file is every default', () => {
  const r = parseConfig('');
  assert.ok(r.ok);
  assert.deepEqual(r.config.api, { listen: '127.0.0.1:15081' });
  assert.deepEqual(r.config.datapath, { cgroup: 'auto', requireRootCgroup: true, pinDir: '/sys/fs/bpf/sidecar-accel', crossPod: false, keepaliveIdleSeconds: 3600, backpressureHoldoffMs: 10_000, proxyUid: 1337, applications: 'auto', sockHashEntries: 65_536 });
  assert.deepEqual(r.config.workloads, []);
});

test('map sizes and a local workload\'s pod IPs parse; the retired peerInfoEntries is still accepted', () => {
  const r = parseConfig('datapath: {sockHashEntries: 4, peerInfoEntries: 8}\nworkloads: [{name: a, namespace: n, pid: 3, ips: [10.1.2.3, "fd00::6"]}]');
  assert.ok(r.ok, r.ok ? '' : r.error);
  assert.equal(r.config.datapath.sockHashEntries, 4);
  assert.equal(r.config.datapath.peerInfoEntries, 8);
  assert.deepEqual(r.config.workloads[0]!.ips, ['10.1.2.3', 'fd00::6']);
});

test('the documented example parses', () => {
  const r = parseConfig(`
api: {listen: 127.0.0.1:15081}
datapath: {cgroup: auto, pinDir: /sys/fs/bpf/sidecar-accel, crossPod: false}
mesh:
  defaultConfig: {proxyMetadata: {SIDECAR_ACCEL: "false"}}
namespaces:
  - name: shop
    annotations: {sidecar-accel.io/enabled: "true"}
workloads:
  - name: pod-a
    namespace: shop
    netns: /var/run/netns/pod-a
    annotations:
      sidecar.istio.io/status: '{"containers":["istio-proxy"]}'
  - name: pod-b
    namespace: shop
    pid: 1234
`);
  assert.ok(r.ok, r.ok ? '' : r.error);
  assert.equal(r.config.workloads[1]!.pid, 1234);
});

test('the xds section: defaults for a cluster, and the documented example parses', () => {
  const d = parseConfig('');
  assert.ok(d.ok);
  assert.deepEqual(d.config.xds, { enabled: false, address: 'istiod.istio-system.svc:15012', plaintext: false, caFile: '/var/run/secrets/istio/root-cert.pem',
    tokenFile: '/var/run/secrets/tokens/istio-token', clusterId: 'Kubernetes', noAnswerSeconds: 30 });
  const r = parseConfig('kubernetes: {enabled: true}\nxds: {enabled: true, address: "istiod.istio-system.svc:15012", serverName: istiod.istio-system.svc, clusterId: c1, noAnswerSeconds: 5}');
  assert.ok(r.ok, r.ok ? '' : r.error);
  assert.equal(r.config.xds.clusterId, 'c1');
});

const bad: [string, string, RegExp][] = [
  ['not YAML', 'a: [1, 2', /not valid YAML/],
  ['unknown top-level key', 'apis: {}', /\(top level\): Unrecognized key.*apis/],
  ['typo in datapath', 'datapath: {crosspod: true}', /datapath: Unrecognized key.*crosspod/],
  ['wrong type', 'datapath: {crossPod: "yes"}', /datapath\.crossPod: .*boolean/],
  ['bad listen address', 'api: {listen: "15081"}', /api\.listen: expected host:port/],
  ['port out of range', 'api: {listen: "127.0.0.1:99999"}', /api\.listen: port must be 1-65535/],
  ['relative pin dir', 'datapath: {pinDir: bpf}', /datapath\.pinDir/],
  ['workload without netns or pid', 'workloads: [{name: a, namespace: n}]', /workloads\.0: set exactly one of netns and pid/],
  ['workload with both', 'workloads: [{name: a, namespace: n, netns: /x, pid: 3}]', /workloads\.0: set exactly one of netns and pid/],
  ['negative pid', 'workloads: [{name: a, namespace: n, pid: -3}]', /workloads\.0\.pid/],
  ['annotation that is not a string', 'workloads: [{name: a, namespace: n, pid: 3, annotations: {x: 1}}]', /workloads\.0\.annotations\.x/],
  ['duplicate workload', 'workloads: [{name: a, namespace: n, pid: 3}, {name: a, namespace: n, pid: 4}]', /n\/a is listed twice/],
  ['a list at the top', '- a', /\(top level\)/],
  ['xds without the kubernetes source', 'xds: {enabled: true}', /xds\.enabled: the xds source needs kubernetes\.enabled/],
  ['xds address without a port', 'kubernetes: {enabled: true}\nxds: {enabled: true, address: istiod.istio-system.svc}', /xds\.address: expected host:port/],
  ['xds relative CA file', 'xds: {caFile: root-cert.pem}', /xds\.caFile/],
  ['xds quiet period of zero', 'xds: {noAnswerSeconds: 0}', /xds\.noAnswerSeconds/],
  ['empty sock_hash', 'datapath: {sockHashEntries: 0}', /datapath\.sockHashEntries/],
  ['sock_hash past the cap', 'datapath: {sockHashEntries: 100000000}', /datapath\.sockHashEntries/],
  ['a pod IP that is not one', 'workloads: [{name: a, namespace: n, pid: 3, ips: [10.1.2]}]', /workloads\.0\.ips\.0/],
];
for (const [name, text, re] of bad) {
  test(`rejected with a precise error: ${name}`, () => {
    const r = parseConfig(text, 'agent.yaml');
    assert.equal(r.ok, false);
    if (!r.ok) {
      assert.match(r.error, /^agent\.yaml: /);
      assert.match(r.error, re);
    }
  });
}

test('hot reload never applies the empty file an editor leaves between truncate and write (SIGHUP does)', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sa-watch-'));
  try {
    const file = path.join(dir, 'agent.yaml');
    fs.writeFileSync(file, 'datapath: {crossPod: true}\n');
    const first = parseConfig(fs.readFileSync(file, 'utf8'));
    assert.ok(first.ok);
    const w = new ConfigWatcher(file, first.config);
    const seen: boolean[] = [];
    w.on('config', (c) => seen.push(c.datapath.crossPod));
    fs.writeFileSync(file, '');
    w.reload('file change');
    assert.deepEqual(seen, [], 'the half-written file was applied');
    fs.writeFileSync(file, 'datapath: {crossPod: false}\n');
    w.reload('file change');
    assert.deepEqual(seen, [false]);
    fs.writeFileSync(file, '');
    w.reload('SIGHUP');
    assert.deepEqual(seen, [false, false], 'an empty file on purpose is every default');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
