// The xDS and workload API messages (proto/, loaded once with protobufjs) and
// the ADS service definition grpc-js uses on both ends. Decoders throw on
// malformed bytes; callers turn that into a NACK or a stream error.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import type * as grpc from '@grpc/grpc-js';

/** proto/ of this installation (dist/src/xds -> repository or image root). */
export const PROTO_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../proto');

export const ADS_SERVICE_NAME = 'envoy.service.discovery.v3.AggregatedDiscoveryService';
export const DELTA_METHOD = `/${ADS_SERVICE_NAME}/DeltaAggregatedResources`;

let root: protobuf.Root | undefined;

/** The message types, loaded on first use. */
export function protoRoot(): protobuf.Root {
  if (root) return root;
  const r = new protobuf.Root();
  // Imports resolve under proto/; google/protobuf/* are protobufjs' bundled copies.
  r.resolvePath = (_origin, target) => path.join(PROTO_DIR, target);
  r.loadSync(['envoy/service/discovery/v3/ads.proto', 'istio/workload/workload.proto'], { keepCase: true });
  r.resolveAll();
  root = r;
  return r;
}

export function messageType(name: string): protobuf.Type {
  return protoRoot().lookupType(name);
}

// Plain shapes of the messages (keepCase: proto field names).
export interface Any { type_url: string; value: Uint8Array }
export interface Status { code: number; message: string }
export interface Node {
  id: string;
  cluster?: string;
  metadata?: { fields: Record<string, { stringValue?: string }> };
  user_agent_name?: string;
  user_agent_version?: string;
}
export interface DeltaDiscoveryRequest {
  node?: Node;
  type_url: string;
  resource_names_subscribe?: string[];
  resource_names_unsubscribe?: string[];
  initial_resource_versions?: Record<string, string>;
  response_nonce?: string;
  error_detail?: Status;
}
export interface Resource { name: string; version: string; resource?: Any; aliases?: string[] }
export interface DeltaDiscoveryResponse {
  system_version_info: string;
  resources: Resource[];
  type_url: string;
  nonce: string;
  removed_resources: string[];
}

const DECODE_OPTIONS: protobuf.IConversionOptions = { defaults: true, arrays: true, objects: true, longs: String, enums: String };

function codec<T extends object>(typeName: string): { encode(m: T): Buffer; decode(b: Uint8Array): T } {
  return {
    encode(m: T): Buffer {
      const t = messageType(typeName);
      return Buffer.from(t.encode(t.fromObject(m as Record<string, unknown>)).finish());
    },
    decode(b: Uint8Array): T {
      const t = messageType(typeName);
      return t.toObject(t.decode(b), DECODE_OPTIONS) as T;
    },
  };
}

export const deltaRequestCodec = codec<DeltaDiscoveryRequest>('envoy.service.discovery.v3.DeltaDiscoveryRequest');
export const deltaResponseCodec = codec<DeltaDiscoveryResponse>('envoy.service.discovery.v3.DeltaDiscoveryResponse');

/** google.protobuf.Struct of string values, as Istio's node metadata. */
export function stringStruct(values: Record<string, string>): Node['metadata'] {
  return { fields: Object.fromEntries(Object.entries(values).map(([k, v]) => [k, { stringValue: v }])) };
}

/**
 * The DeltaAggregatedResources method for grpc-js: the client and the tests'
 * in-process servers use the same (de)serializers.
 */
export function adsServiceDefinition(): grpc.ServiceDefinition {
  return {
    DeltaAggregatedResources: {
      path: DELTA_METHOD,
      requestStream: true,
      responseStream: true,
      requestSerialize: (m: DeltaDiscoveryRequest) => deltaRequestCodec.encode(m),
      requestDeserialize: (b: Buffer) => deltaRequestCodec.decode(b),
      responseSerialize: (m: DeltaDiscoveryResponse) => deltaResponseCodec.encode(m),
      responseDeserialize: (b: Buffer) => deltaResponseCodec.decode(b),
      originalName: 'deltaAggregatedResources',
    },
  };
}
