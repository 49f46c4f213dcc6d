// Istio's workload API (`istio.workload.Address`): decode and validate one
// resource into what the agent uses. Anything malformed is an XdsResourceError,
// which the client NACKs while it keeps the resource's last good version.
import { istio } from './protos.js';
import type { DeltaResource, Rejection } from './delta-client.js';

export const ADDRESS_TYPE_URL = 'type.googleapis.com/istio.workload.Address';

export class XdsResourceError extends Error {}

export interface MeshWorkload {
  /** The xDS resource name; for a pod `<cluster>//Pod/<namespace>/<name>`. */
  uid: string;
  name: string;
  namespace: string;
  node: string;
  /** NONE: plain (sidecar or no mesh); HBONE: captured by ztunnel; or an enum value this build does not know. */
  tunnel: string;
  canonicalName: string;
  canonicalRevision: string;
  serviceAccount: string;
  trustDomain: string;
  clusterId: string;
  network: string;
  addresses: string[];
}

export type AddressResource =
  | { kind: 'workload'; workload: MeshWorkload }
  | { kind: 'service'; namespace: string; hostname: string };

function ipText(b: Uint8Array): string {
  if (b.length === 4) return Array.from(b).join('.');
  if (b.length === 16) {
    // Uncompressed but valid IPv6 text; only shown, never compared.
    return Array.from({ length: 8 }, (_, i) => ((b[2 * i]! << 8) | b[2 * i + 1]!).toString(16)).join(':');
  }
  throw new XdsResourceError(`address of ${b.length} bytes (an IPv4 address has 4, IPv6 16)`);
}

/** The pod uid istiod gives a Kubernetes pod of `cluster`. */
export function podWorkloadUid(clusterId: string, namespace: string, name: string): string {
  return `${clusterId}//Pod/${namespace}/${name}`;
}

/** Decodes and validates the body of the resource `name`. Throws XdsResourceError. */
export function decodeAddress(name: string, value: Uint8Array): AddressResource {
  let a: istio.workload.Address;
  try {
    a = istio.workload.Address.decode(value);
  } catch (e) {
    throw new XdsResourceError(`not an istio.workload.Address: ${(e as Error).message}`);
  }
  if (a.type === 'service' && a.service) {
    if (!a.service.hostname) throw new XdsResourceError('service without a hostname');
    return { kind: 'service', namespace: a.service.namespace ?? '', hostname: a.service.hostname };
  }
  const w = a.workload;
  if (a.type !== 'workload' || !w) throw new XdsResourceError('Address with neither a workload nor a service');
  if (!w.uid) throw new XdsResourceError('workload without a uid');
  // Delta xDS names a workload by its uid; removal by name depends on it.
  if (w.uid !== name) throw new XdsResourceError(`resource name is not the workload uid ${JSON.stringify(w.uid)}`);
  const tunnel = w.tunnel_protocol ?? istio.workload.TunnelProtocol.NONE;
  return {
    kind: 'workload',
    workload: {
      // A value this build does not know shows as its number.
      uid: w.uid, name: w.name ?? '', namespace: w.namespace ?? '', node: w.node ?? '', tunnel: istio.workload.TunnelProtocol[tunnel] ?? String(tunnel),
      canonicalName: w.canonical_name ?? '', canonicalRevision: w.canonical_revision ?? '', serviceAccount: w.service_account ?? '',
      trustDomain: w.trust_domain ?? '', clusterId: w.cluster_id ?? '', network: w.network ?? '', addresses: (w.addresses ?? []).map(ipText),
    },
  };
}

export interface DecodedAddress { name: string; version: string; address: AddressResource }

/** Decodes every resource of a response: the valid ones, and the rest as rejections (NACKed). */
export function decodeAddresses(resources: DeltaResource[]): { decoded: DecodedAddress[]; rejected: (Rejection & { version: string })[] } {
  const decoded: DecodedAddress[] = [];
  const rejected: (Rejection & { version: string })[] = [];
  for (const r of resources) {
    try {
      decoded.push({ name: r.name, version: r.version, address: decodeAddress(r.name, r.value) });
    } catch (e) {
      if (!(e instanceof XdsResourceError)) throw e;
      rejected.push({ name: r.name, version: r.version, error: e.message });
    }
  }
  return { decoded, rejected };
}
