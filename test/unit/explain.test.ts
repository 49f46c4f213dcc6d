// `sidecar-accel explain` from the manifests an operator has.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');
let dir: string;
const file = (name: string, text: string) => { const p = path.join(dir, name); fs.writeFileSync(p, text); return p; };
const explain = (...args: string[]) => spawnSync(process.execPath, [cli, 'explain', ...args], { encoding: 'utf8' });

before(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sa-explain-')); });
after(() => fs.rmSync(dir, { recursive: true, force: true }));

const POD = (annotations: string) => `apiVersion: v1
kind: Pod
metadata:
  name: reviews-v1-abc
  namespace: shop
  annotations:
    sidecar.istio.io/status: '{"containers":["istio-proxy"]}'
${annotations}
spec: {containers: [{name: app, image: x}]}
`;
const NS = (v: string) => `apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  annotations: {sidecar-accel.io/enabled: "${v}"}\n`;
const MESH = (v: string) => `apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |-
    defaultConfig:
      proxyMetadata:
        SIDECAR_ACCEL: "${v}"
`;

test('the mesh config turns it on when nothing closer says otherwise (--json)', () => {
  const r = explain('--pod', file('p.yaml', POD('')), '--namespace', file('n.yaml', 'kind: Namespace\nmetadata: {name: shop}\n'), '--mesh', file('m.yaml', MESH('true')), '--json');
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { enabled: boolean; rule: string; warnings: string[] };
  assert.deepEqual([out.enabled, out.rule, out.warnings], [true, 'mesh-config', []]);
});

test('the pod ProxyConfig beats the namespace; text output names the rule', () => {
  const r = explain('--pod', file('p.yaml', POD(`    proxy.istio.io/config: |\n      proxyMetadata:\n        SIDECAR_ACCEL: "true"`)), '--namespace', file('n.yaml', NS('false')));
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^shop\/reviews-v1-abc: accelerated\n  decided by: pod annotation proxy\.istio\.io\/config/);
});

test('a pod whose sidecar captures none of its outbound traffic: said, and in --json', () => {
  const pod = file('p.yaml', POD(`    traffic.sidecar.istio.io/includeOutboundIPRanges: ""`));
  const r = explain('--pod', pod, '--namespace', file('n.yaml', NS('true')));
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /\n  its sidecar captures none of its outbound traffic: an application socket to or from no pod of this node is left alone\n/);
  const j = explain('--pod', pod, '--namespace', file('n.yaml', NS('true')), '--json');
  assert.deepEqual((JSON.parse(j.stdout) as { captures: unknown }).captures, { outbound: false, inbound: true });
});

test('a malformed annotation is a warning, not an error', () => {
  const r = explain('--pod', file('p.yaml', POD('    sidecar-accel.io/enabled: "si"')), '--namespace', file('n.yaml', NS('true')), '--json');
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { enabled: boolean; rule: string; warnings: string[] };
  assert.equal(out.rule, 'namespace-annotation');
  assert.match(out.warnings[0]!, /"si" is not true or false/);
});

test('bad files are clear errors with exit 2', () => {
  let r = explain('--pod', path.join(dir, 'nope.yaml'));
  assert.equal(r.status, 2);
  assert.match(r.stderr, /Pod .*nope\.yaml: cannot read \(ENOENT\)/);
  r = explain('--pod', file('ns-as-pod.yaml', NS('true')));
  assert.match(r.stderr, /kind is Namespace, expected Pod/);
  r = explain('--pod', file('p.yaml', POD('')), '--mesh', file('cm.yaml', 'kind: ConfigMap\nmetadata: {name: istio}\ndata: {other: x}\n'));
  assert.match(r.stderr, /ConfigMap without data\.mesh/);
  r = explain('--pod', file('bad.yaml', 'metadata: [\n'));
  assert.match(r.stderr, /not YAML or JSON/);
  r = explain();
  assert.match(r.stderr, /explain needs --pod FILE/);
});
