// The xDS and workload API messages, as code and types that scripts/build.sh
// generates from proto/ with protobufjs' own CLI (pbjs: a static module, pbts:
// its declarations) into ./gen, and the ADS method grpc-js uses on both ends.
// Decoders throw on malformed bytes; callers turn that into a NACK or a stream
// error. A decoded message reads unset fields as their proto3 defaults.
import type * as grpc from '@grpc/grpc-js';
import { envoy, google, istio } from './gen/protos.js';

export { envoy, google, istio };

export const ADS_SERVICE_NAME = 'envoy.service.discovery.v3.AggregatedDiscoveryService';
export const DELTA_METHOD = `/${ADS_SERVICE_NAME}/DeltaAggregatedResources`;

const v3 = envoy.service.discovery.v3;

/** What a client sends; the server receives it as DeltaRequestMessage. */
export type DeltaRequest = envoy.service.discovery.v3.IDeltaDiscoveryRequest;
export type DeltaRequestMessage = envoy.service.discovery.v3.DeltaDiscoveryRequest;
/** What a server sends; the client receives it as DeltaResponseMessage. */
export type DeltaResponse = envoy.service.discovery.v3.IDeltaDiscoveryResponse;
export type DeltaResponseMessage = envoy.service.discovery.v3.DeltaDiscoveryResponse;
export type Node = envoy.config.core.v3.INode;

/** A generated message type's encoder and decoder as Buffers, for grpc-js. */
export interface Codec<Sent, Received> { encode(m: Sent): Buffer; decode(b: Uint8Array): Received }

function codec<Sent, Received>(t: { encode(m: Sent): { finish(): Uint8Array }; decode(b: Uint8Array): Received }): Codec<Sent, Received> {
  return {
    encode: (m) => Buffer.from(t.encode(m).finish()),
    decode: (b) => t.decode(b),
  };
}

export const deltaRequestCodec: Codec<DeltaRequest, DeltaRequestMessage> = codec(v3.DeltaDiscoveryRequest);
export const deltaResponseCodec: Codec<DeltaResponse, DeltaResponseMessage> = codec(v3.DeltaDiscoveryResponse);

/** google.protobuf.Struct of string values, as Istio's node metadata. */
export function stringStruct(values: Record<string, string>): google.protobuf.IStruct {
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
      requestSerialize: (m: DeltaRequest) => deltaRequestCodec.encode(m),
      requestDeserialize: (b: Buffer) => deltaRequestCodec.decode(b),
      responseSerialize: (m: DeltaResponse) => deltaResponseCodec.encode(m),
      responseDeserialize: (b: Buffer) => deltaResponseCodec.decode(b),
      originalName: 'deltaAggregatedResources',
    },
  };
}
