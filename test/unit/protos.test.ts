// The message code scripts/build.sh generates from proto/ (pbjs) is proto/ as
// it stands: every message and field that protobufjs reads from the .proto
// files is in the generated module, with the same field numbers on the wire.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import { envoy, google, istio } from '../../src/xds/protos.js';

const PROTO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../proto');

function fromProtoDir(): protobuf.Root {
  const r = new protobuf.Root();
  r.resolvePath = (_origin, target) => path.join(PROTO, target);
  r.loadSync(['envoy/service/discovery/v3/ads.proto', 'istio/workload/workload.proto'], { keepCase: true });
  r.resolveAll();
  return r;
}

function types(ns: protobuf.NamespaceBase): protobuf.Type[] {
  return ns.nestedArray.flatMap((n) => [...(n instanceof protobuf.Type ? [n] : []), ...(n instanceof protobuf.Namespace ? types(n) : [])]);
}

interface Generated { prototype: object; encode(m: object): { finish(): Uint8Array }; decode(b: Uint8Array): object }

test('every message and field of proto/ is in the generated code', () => {
  const generated: Record<string, unknown> = { envoy, google, istio };
  const all = types(fromProtoDir());
  assert.ok(all.some((t) => t.fullName === '.istio.workload.Workload'), 'the workload API is read from proto/');
  for (const t of all) {
    const g = t.fullName.slice(1).split('.').reduce<unknown>((o, k) => (o as Record<string, unknown> | undefined)?.[k], generated) as Generated | undefined;
    assert.equal(typeof g?.decode, 'function', `${t.fullName} generated`);
    for (const f of t.fieldsArray) assert.ok(f.name in g!.prototype, `${t.fullName}.${f.name} generated`);
  }
});

test('the generated code and proto/ read each other\'s bytes', () => {
  const w = { uid: 'Kubernetes//Pod/shop/a', name: 'a', namespace: 'shop', node: 'node-1', tunnel_protocol: 1, canonical_name: 'ratings', addresses: [Buffer.from([10, 0, 0, 1])] };
  const reflected = fromProtoDir().lookupType('istio.workload.Address');
  const bytes = reflected.encode(reflected.fromObject({ workload: w })).finish();
  const decoded = istio.workload.Address.decode(bytes);
  assert.equal(decoded.type, 'workload');
  const got = decoded.workload as Record<string, unknown>;
  assert.deepEqual(Object.fromEntries(Object.keys(w).map((k) => [k, got[k]])), { ...w, addresses: [Buffer.from([10, 0, 0, 1])] });
  const back = reflected.toObject(reflected.decode(istio.workload.Address.encode({ workload: w }).finish()), { enums: String });
  assert.equal((back as { workload: { tunnel_protocol: string } }).workload.tunnel_protocol, 'HBONE');
});
