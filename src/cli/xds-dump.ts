// `sidecar-accel xds-dump`: subscribe to istiod's workload API like the agent
// (same node identity, same ACK/NACK rules) and print what arrives, as it
// arrives, to debug a cluster. --json: one JSON object per line.
import os from 'node:os';
import type { Writable } from 'node:stream';
import pino from 'pino';
import { DeltaClient } from '../xds/delta-client.js';
import { ADDRESS_TYPE_URL, decodeAddresses, type AddressResource } from '../xds/workload-api.js';
import * as grpc from '@grpc/grpc-js';
import { NOT_SERVED, identityFromEnv, istioNode, xdsChannel, type XdsConnection } from '../workloads/xds.js';

/** The server answered UNIMPLEMENTED before any response: retrying cannot help a debugging session. */
export class XdsNotServedError extends Error {}

export interface XdsDumpOptions {
  connection: XdsConnection;
  nodeName: string;
  clusterId: string;
  json: boolean;
  /** Stop after this many responses (default: until interrupted). */
  count?: number;
  out: Writable;
}

type DumpLine =
  | { event: 'stream'; attempt: number; initialVersions: number }
  | { event: 'response'; nonce: string; systemVersion: string; resources: number; removed: number }
  | { event: 'resource'; name: string; version: string; address: AddressResource }
  | { event: 'invalid'; name: string; version: string; error: string }
  | { event: 'removed'; name: string }
  | { event: 'ack'; nonce: string }
  | { event: 'nack'; nonce: string; message: string }
  | { event: 'end'; code: number; details: string; responses: number; retryInMs: number };

function text(l: DumpLine): string {
  switch (l.event) {
    case 'stream': return `stream #${l.attempt} opened (announcing ${l.initialVersions} resources held)`;
    case 'response': return `response nonce=${l.nonce} version=${l.systemVersion || '-'}: ${l.resources} resources, ${l.removed} removed`;
    case 'resource': {
      const a = l.address;
      if (a.kind === 'service') return `  + service ${a.namespace}/${a.hostname} (version ${l.version})`;
      const w = a.workload;
      return `  + workload ${l.name} (version ${l.version}) node=${w.node || '-'} tunnel=${w.tunnel} canonical=${w.canonicalName || '-'}:${w.canonicalRevision || '-'} addresses=${w.addresses.join(',') || '-'}`;
    }
    case 'invalid': return `  ! ${l.name} (version ${l.version}): ${l.error}`;
    case 'removed': return `  - ${l.name}`;
    case 'ack': return `ACK ${l.nonce}`;
    case 'nack': return `NACK ${l.nonce}: ${l.message}`;
    case 'end': return `stream ended: code ${l.code} ${l.details} after ${l.responses} responses; reconnecting in ${l.retryInMs} ms`;
  }
}

/**
 * Runs until `count` responses were printed, or until `signal` aborts; fails
 * with XdsNotServedError when the server does not serve the workload API.
 */
export async function runXdsDump(o: XdsDumpOptions, signal: AbortSignal): Promise<void> {
  const print = (l: DumpLine) => o.out.write((o.json ? JSON.stringify(l) : text(l)) + '\n');
  const ch = xdsChannel(o.connection);
  let responses = 0;
  let done!: () => void;
  let fail!: (e: Error) => void;
  const finished = new Promise<void>((resolve, reject) => { done = resolve; fail = reject; });
  const client = new DeltaClient({
    target: o.connection.address, channel: ch.channel, metadata: ch.metadata,
    node: istioNode(identityFromEnv(o.nodeName, o.clusterId, `xds-dump-${os.hostname()}`), 'xds-dump'),
    typeUrl: ADDRESS_TYPE_URL,
    // Logs go to stderr; stdout carries only what istiod sent.
    log: pino({ level: 'warn' }, pino.destination(2)),
    handler: (u) => {
      print({ event: 'response', nonce: u.nonce, systemVersion: u.systemVersion, resources: u.resources.length, removed: u.removed.length });
      const { decoded, rejected } = decodeAddresses(u.resources);
      for (const d of decoded) print({ event: 'resource', ...d });
      for (const r of rejected) print({ event: 'invalid', ...r });
      for (const name of u.removed) print({ event: 'removed', name });
      return rejected;
    },
  });
  const counted = () => { if (o.count !== undefined && ++responses >= o.count) done(); };
  client.on('stream', (s) => print({ event: 'stream', attempt: s.attempt, initialVersions: Object.keys(s.initialVersions).length }));
  client.on('ack', (a) => { print({ event: 'ack', nonce: a.nonce }); counted(); });
  client.on('nack', (n) => { print({ event: 'nack', nonce: n.nonce, message: n.message }); counted(); });
  client.on('end', (e) => {
    // The agent keeps listening (ambient support may be turned on later); a
    // person debugging wants the answer now.
    if (e.failure && e.code === grpc.status.UNIMPLEMENTED) {
      client.stop();
      fail(new XdsNotServedError(`${NOT_SERVED} at ${o.connection.address} (gRPC UNIMPLEMENTED: ${e.details}); is istiod's ambient support (PILOT_ENABLE_AMBIENT) off?`));
      return;
    }
    print({ event: 'end', code: e.code, details: e.details, responses: e.responses, retryInMs: e.retryInMs });
  });
  signal.addEventListener('abort', () => done(), { once: true });
  client.start();
  try {
    await finished;
  } finally {
    client.stop();
  }
}
