// The `xds` workload source: Istio's workload API from istiod over Delta ADS,
// subscribed the way ztunnel (Istio's node-level proxy) does. It keeps the
// workloads whose `node` is this node; the agent joins them with the
// kubernetes records (by the uid istiod gives a pod) to learn which pods
// ztunnel captures (HBONE: never paired), their canonical service and
// revision (metric labels) and which are mesh workloads (cross-pod pairing).
// istiod serves the API only with ambient support on: in a sidecar-only mesh
// this source says so once and the agent runs on the kubernetes source alone.
import fs from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { DeltaClient, type DeltaUpdate, type Rejection } from '../xds/delta-client.js';
import type { BackoffPolicy } from '../util/backoff.js';
import { ADDRESS_TYPE_URL, decodeAddresses, podWorkloadUid, type MeshWorkload } from '../xds/workload-api.js';
import { stringStruct, type Node } from '../xds/protos.js';
import type { Workload } from './workload.js';
import { coalesced } from '../util/coalesce.js';

export interface XdsIdentity {
  /** This node (Workload.node is compared with it). */
  nodeName: string;
  clusterId: string;
  /** The agent's own pod, as Istio's node metadata names it. */
  podName: string;
  podNamespace: string;
  podIp: string;
}

export interface XdsConnection {
  address: string;
  /** No TLS and no token: only for a local test server. */
  plaintext: boolean;
  /** PEM of the CA that signed istiod's serving certificate (istio-ca-root-cert). */
  caFile?: string;
  /** A projected service-account token (audience istio-ca), sent as a bearer token. */
  tokenFile?: string;
  /** Name to verify istiod's certificate against, when it differs from the address' host. */
  serverName?: string;
}

/**
 * This process' identity from the downward API environment the DaemonSet
 * sets (POD_NAME, POD_NAMESPACE, INSTANCE_IP), with `podName` for a process
 * run outside it.
 */
export function identityFromEnv(nodeName: string, clusterId: string, podName: string): XdsIdentity {
  return {
    nodeName, clusterId, podName: process.env.POD_NAME ?? podName, podNamespace: process.env.POD_NAMESPACE ?? 'sidecar-accel',
    podIp: process.env.INSTANCE_IP ?? process.env.POD_IP ?? '127.0.0.1',
  };
}

/** The node identity in Istio's form for a node-level client (ztunnel's). */
export function istioNode(id: XdsIdentity, agentVersion: string): Node {
  return {
    id: `ztunnel~${id.podIp}~${id.podName}.${id.podNamespace}~${id.podNamespace}.svc.cluster.local`,
    metadata: stringStruct({
      NAME: id.podName, NAMESPACE: id.podNamespace, INSTANCE_IPS: id.podIp, NODE_NAME: id.nodeName, CLUSTER_ID: id.clusterId,
    }),
    user_agent_name: 'sidecar-accel',
    user_agent_version: agentVersion,
  };
}

/**
 * Channel credentials (built when called: the CA file is read then) and
 * per-stream headers (the token file is read at each stream: it rotates).
 * Plaintext sends no token: a bearer token never travels in clear.
 */
export function xdsChannel(c: XdsConnection): {
  channel: () => { credentials: grpc.ChannelCredentials; options: grpc.ChannelOptions };
  metadata: () => Record<string, string>;
} {
  if (c.plaintext) return { channel: () => ({ credentials: grpc.credentials.createInsecure(), options: {} }), metadata: () => ({}) };
  const caFile = c.caFile;
  if (!caFile) throw new Error('caFile is required unless plaintext is set');
  return {
    channel: () => ({
      credentials: grpc.credentials.createSsl(fs.readFileSync(caFile)),
      options: c.serverName ? { 'grpc.ssl_target_name_override': c.serverName, 'grpc.default_authority': c.serverName } : {},
    }),
    metadata: (): Record<string, string> => (c.tokenFile ? { authorization: `Bearer ${fs.readFileSync(c.tokenFile, 'utf8').trim()}` } : {}),
  };
}

/** What the agent and xds-dump say of a server that answers UNIMPLEMENTED or never answers. */
export const NOT_SERVED = 'istiod serves no workload API';

/** serving: istiod answered; not-served: it does not serve the workload API; unreachable: no stream came up. */
export type XdsState = 'connecting' | 'serving' | 'not-served' | 'unreachable';

export interface XdsHealth {
  state: XdsState;
  responses: number;
  acks: number;
  nacks: number;
  workloadsOnNode: number;
  lastError?: string;
}

export interface XdsSourceOptions {
  connection: XdsConnection;
  identity: XdsIdentity;
  log: Logger;
  onChange: () => void;
  agentVersion?: string;
  backoff?: BackoffPolicy;
  /** With no answer this long, the server is taken not to serve the workload API (said once). */
  noAnswerMs?: number;
}

export class XdsSource {
  readonly client: DeltaClient;
  private readonly onNode = new Map<string, MeshWorkload>();
  private state: XdsState = 'connecting';
  private responses = 0;
  private acks = 0;
  private nacks = 0;
  private lastError?: string;
  private lastCode?: number;
  private quietTimer?: NodeJS.Timeout;
  /** Coalesced: one reconcile for a response of many resources. */
  private readonly changed = coalesced(() => { if (!this.stopped) this.opts.onChange(); });
  private stopped = true;

  constructor(private readonly opts: XdsSourceOptions) {
    const ch = xdsChannel(opts.connection);
    this.client = new DeltaClient({
      target: opts.connection.address, channel: ch.channel, metadata: ch.metadata,
      node: istioNode(opts.identity, opts.agentVersion ?? 'dev'), typeUrl: ADDRESS_TYPE_URL,
      handler: (u) => this.apply(u), log: opts.log, ...(opts.backoff ? { backoff: opts.backoff } : {}),
    });
    this.client.on('ack', () => { this.acks++; });
    this.client.on('nack', () => { this.nacks++; });
    this.client.on('end', (e) => {
      this.lastCode = e.code;
      if (e.code !== grpc.status.OK) this.lastError = `${grpc.status[e.code] ?? e.code}: ${e.details}`;
      if (!e.failure) return;
      // A server without the ADS service, or one that refuses the type, says so at once;
      // once settled, later failures say which of the two it is now.
      if (e.code === grpc.status.UNIMPLEMENTED) this.settle('not-served');
      else if (this.state !== 'connecting') this.settle(XdsSource.noAnswerState(e.code));
    });
  }

  start(): void {
    this.stopped = false;
    this.client.start();
    this.quietTimer = setTimeout(() => {
      if (this.responses > 0) return;
      this.settle(XdsSource.noAnswerState(this.lastCode));
    }, this.opts.noAnswerMs ?? 30_000);
  }

  /** No stream came up (connection or credentials), or streams come up and get no answer. */
  private static noAnswerState(code: number | undefined): 'not-served' | 'unreachable' {
    return code === grpc.status.UNAVAILABLE || code === grpc.status.UNAUTHENTICATED ? 'unreachable' : 'not-served';
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.quietTimer);
    this.client.stop();
  }

  /** Moves to a no-answer state and says so once per change. */
  private settle(state: 'not-served' | 'unreachable'): void {
    if (this.state === state || this.state === 'serving') return;
    this.state = state;
    const line = { address: this.opts.connection.address, ...(this.lastError ? { lastError: this.lastError } : {}) };
    if (state === 'not-served') {
      this.opts.log.warn(line, `${NOT_SERVED} (ambient support off?); running on the kubernetes source alone, still listening`);
    } else {
      this.opts.log.warn(line, 'istiod unreachable; running on the kubernetes source alone, retrying with backoff');
    }
    this.changed();
  }

  private apply(u: DeltaUpdate): Rejection[] {
    this.responses++;
    const before = this.state;
    this.state = 'serving';
    if (before !== 'serving') this.opts.log.info({ address: this.opts.connection.address }, 'istiod serves the workload API');
    const { decoded, rejected } = decodeAddresses(u.resources);
    for (const { name, address: a } of decoded) {
      if (a.kind !== 'workload') continue;
      if (a.workload.node === this.opts.identity.nodeName) this.onNode.set(name, a.workload);
      else this.onNode.delete(name);
    }
    for (const name of u.removed) this.onNode.delete(name);
    this.changed();
    return rejected;
  }

  /** True when istiod answers: its view is then the truth for what it covers. */
  serving(): boolean {
    return this.state === 'serving';
  }

  health(): XdsHealth {
    return {
      state: this.state, responses: this.responses, acks: this.acks, nacks: this.nacks, workloadsOnNode: this.onNode.size,
      ...(this.lastError ? { lastError: this.lastError } : {}),
    };
  }

  workloadsOnNode(): MeshWorkload[] {
    return [...this.onNode.values()];
  }

  /** istiod's record of a kubernetes pod of this node, by the uid istiod gives it. */
  meshWorkloadOf(w: Workload): MeshWorkload | undefined {
    if (w.source !== 'kubernetes') return undefined;
    const exact = this.onNode.get(podWorkloadUid(this.opts.identity.clusterId, w.namespace, w.name));
    if (exact) return exact;
    // A cluster id configured differently from istiod's: the rest of the uid still names the pod.
    const suffix = `//Pod/${w.namespace}/${w.name}`;
    for (const m of this.onNode.values()) if (m.uid.endsWith(suffix)) return m;
    return undefined;
  }
}
