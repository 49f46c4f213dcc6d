// The toggle precedence of docs/design.md 6, every level, as a table.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { captureOf, decide, parseBool, type ObjectMeta, type Rule } from '../../src/policy/policy.js';

const SIDECAR = { 'sidecar.istio.io/status': '{"containers":["istio-proxy"]}' };
const pod = (annotations: Record<string, string> = {}, labels: Record<string, string> = {}): ObjectMeta =>
  ({ name: 'p', namespace: 'shop', annotations: { ...SIDECAR, ...annotations }, labels });
const ns = (v?: string): ObjectMeta => ({ name: 'shop', annotations: v === undefined ? {} : { 'sidecar-accel.io/enabled': v } });
const mesh = (v?: string) => (v === undefined ? {} : { defaultConfig: { proxyMetadata: { SIDECAR_ACCEL: v } } });
const pc = (v: string) => ({ 'proxy.istio.io/config': v });

interface Row { name: string; pod: ObjectMeta; ns?: ObjectMeta; mesh?: unknown; enabled: boolean; rule: Rule; warn?: RegExp }

const rows: Row[] = [
  { name: 'nothing set: the agent default (off)', pod: pod(), ns: ns(), mesh: mesh(), enabled: false, rule: 'agent-default' },
  { name: 'mesh config on', pod: pod(), ns: ns(), mesh: mesh('true'), enabled: true, rule: 'mesh-config' },
  { name: 'namespace beats mesh', pod: pod(), ns: ns('false'), mesh: mesh('true'), enabled: false, rule: 'namespace-annotation' },
  { name: 'namespace on', pod: pod(), ns: ns('true'), mesh: mesh(), enabled: true, rule: 'namespace-annotation' },
  { name: 'pod ProxyConfig (JSON) beats namespace', pod: pod(pc('{"proxyMetadata":{"SIDECAR_ACCEL":"true"}}')), ns: ns('false'), enabled: true, rule: 'pod-proxy-config' },
  { name: 'pod ProxyConfig (YAML) beats mesh', pod: pod(pc('proxyMetadata:\n  SIDECAR_ACCEL: "false"\n')), mesh: mesh('true'), enabled: false, rule: 'pod-proxy-config' },
  { name: 'pod annotation beats everything', pod: pod({ 'sidecar-accel.io/enabled': 'true', ...pc('{"proxyMetadata":{"SIDECAR_ACCEL":"false"}}') }), ns: ns('false'), mesh: mesh('false'), enabled: true, rule: 'pod-annotation' },
  { name: 'pod annotation off beats mesh on', pod: pod({ 'sidecar-accel.io/enabled': 'False' }), mesh: mesh('true'), enabled: false, rule: 'pod-annotation' },
  { name: 'no sidecar: never', pod: { name: 'p', annotations: { 'sidecar-accel.io/enabled': 'true' } }, mesh: mesh('true'), enabled: false, rule: 'no-sidecar' },
  { name: 'ambient label: never', pod: pod({ 'sidecar-accel.io/enabled': 'true' }, { 'istio.io/dataplane-mode': 'ambient' }), enabled: false, rule: 'ambient' },
  { name: 'ambient redirection annotation: never', pod: pod({ 'ambient.istio.io/redirection': 'enabled', 'sidecar-accel.io/enabled': 'true' }), enabled: false, rule: 'ambient' },
  { name: 'istiod marks it HBONE (ztunnel captures it): never, whatever its annotations', pod: { ...pod({ 'sidecar-accel.io/enabled': 'true' }), tunnel: 'HBONE' }, enabled: false, rule: 'xds-hbone' },
  { name: 'a tunnel protocol this build does not know: never', pod: { ...pod({ 'sidecar-accel.io/enabled': 'true' }), tunnel: '7' }, enabled: false, rule: 'xds-hbone' },
  { name: 'istiod says no tunnel: the annotations decide', pod: { ...pod({ 'sidecar-accel.io/enabled': 'true' }), tunnel: 'NONE' }, enabled: true, rule: 'pod-annotation' },
  { name: 'hostNetwork pod: never (it is the node\'s netns)', pod: { ...pod({ 'sidecar-accel.io/enabled': 'true' }), hostNetwork: true }, enabled: false, rule: 'host-network' },
  { name: 'TPROXY interception: skipped with a reason', pod: pod({ 'sidecar-accel.io/enabled': 'true', 'sidecar.istio.io/interceptionMode': 'TPROXY' }), enabled: false, rule: 'tproxy-unsupported' },
  { name: 'REDIRECT interception stated explicitly: a candidate', pod: pod({ 'sidecar.istio.io/interceptionMode': 'REDIRECT' }), mesh: mesh('true'), enabled: true, rule: 'mesh-config' },
  { name: 'malformed pod annotation falls through, with a warning', pod: pod({ 'sidecar-accel.io/enabled': 'yes' }), ns: ns('true'), enabled: true, rule: 'namespace-annotation', warn: /"yes" is not true or false/ },
  { name: 'ProxyConfig that is not YAML falls through', pod: pod(pc('{proxyMetadata: [')), mesh: mesh('true'), enabled: true, rule: 'mesh-config', warn: /not YAML or JSON/ },
  { name: 'ProxyConfig with a non-boolean value falls through', pod: pod(pc('{"proxyMetadata":{"SIDECAR_ACCEL":"maybe"}}')), ns: ns('true'), enabled: true, rule: 'namespace-annotation', warn: /"maybe" is not true or false/ },
  { name: 'ProxyConfig whose proxyMetadata is a list falls through', pod: pod(pc('proxyMetadata: [a, b]')), enabled: false, rule: 'agent-default', warn: /proxyMetadata: not a map/ },
  { name: 'ProxyConfig without the key falls through silently', pod: pod(pc('{"proxyMetadata":{"OTHER":"1"}}')), mesh: mesh('true'), enabled: true, rule: 'mesh-config' },
  { name: 'malformed namespace annotation falls through', pod: pod(), ns: ns('on'), mesh: mesh('true'), enabled: true, rule: 'mesh-config', warn: /namespace annotation.*"on"/ },
  { name: 'malformed mesh value: the default', pod: pod(), mesh: mesh('enabled'), enabled: false, rule: 'agent-default', warn: /mesh config.*"enabled"/ },
  { name: 'mesh config that is not an object', pod: pod(), mesh: 'garbage', enabled: false, rule: 'agent-default', warn: /not a MeshConfig object/ },
  { name: 'no namespace known', pod: pod(), ns: undefined, mesh: mesh('1'), enabled: true, rule: 'mesh-config' },
];

for (const r of rows) {
  test(`precedence: ${r.name}`, () => {
    const d = decide(r.pod, r.ns, r.mesh);
    assert.equal(d.enabled, r.enabled);
    assert.equal(d.rule, r.rule);
    if (r.warn) assert.match(d.warnings.join('\n'), r.warn);
    else assert.deepEqual(d.warnings, []);
  });
}

test('exclude ports: parsed, sorted, de-duplicated; malformed ones warn and exclude nothing', () => {
  assert.deepEqual(decide(pod({ 'sidecar-accel.io/exclude-ports': ' 5432,3306, 3306' }), undefined, {}).excludePorts, [3306, 5432]);
  for (const bad of ['80,http', '0', '70000', '1,,2x', Array.from({ length: 17 }, (_, i) => i + 1).join(',')]) {
    const d = decide(pod({ 'sidecar-accel.io/exclude-ports': bad }), undefined, {});
    assert.deepEqual(d.excludePorts, [], bad);
    assert.match(d.warnings.join(), /exclude-ports/, bad);
  }
});

test("booleans are Go's ParseBool", () => {
  for (const t of ['1', 't', 'T', 'TRUE', 'true', 'True']) assert.equal(parseBool(t), true);
  for (const f of ['0', 'f', 'F', 'FALSE', 'false', 'False']) assert.equal(parseBool(f), false);
  for (const x of ['yes', 'on', 'tRUE', '', ' true']) assert.equal(parseBool(x), undefined);
});

test('capture: what Istio\'s annotations say its sidecar captures of the applications\' TCP; absent or anything else is captured', () => {
  const out = 'traffic.sidecar.istio.io/includeOutboundIPRanges';
  const outPorts = 'traffic.sidecar.istio.io/includeOutboundPorts';
  const inPorts = 'traffic.sidecar.istio.io/includeInboundPorts';
  const rows: [Record<string, string>, { outbound: boolean; inbound: boolean }][] = [
    [{}, { outbound: true, inbound: true }],
    [{ 'sidecar.istio.io/interceptionMode': 'NONE' }, { outbound: false, inbound: false }],
    [{ 'sidecar.istio.io/interceptionMode': 'REDIRECT' }, { outbound: true, inbound: true }],
    [{ [out]: '' }, { outbound: false, inbound: true }],
    [{ [out]: ' ' }, { outbound: false, inbound: true }],
    [{ [out]: '', [outPorts]: '5432' }, { outbound: true, inbound: true }],
    [{ [out]: '10.0.0.0/8' }, { outbound: true, inbound: true }],
    [{ [out]: '*' }, { outbound: true, inbound: true }],
    [{ [inPorts]: '' }, { outbound: true, inbound: false }],
    [{ [inPorts]: '8080' }, { outbound: true, inbound: true }],
  ];
  for (const [annotations, want] of rows) {
    assert.deepEqual(captureOf(pod(annotations)), want, JSON.stringify(annotations));
    assert.deepEqual(decide(pod(annotations), undefined, mesh('true')).captures, want);
  }
});
