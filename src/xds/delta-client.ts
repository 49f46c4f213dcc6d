// A Delta xDS client for one resource type over ADS
// (DeltaAggregatedResources), following the protocol as Envoy and ztunnel do:
// - the first request of every stream carries the node, the type and, after a
//   reconnect, `initial_resource_versions` (what this client holds);
// - every response is answered: ACK (its nonce) or NACK (its nonce plus
//   `error_detail`) when a resource was rejected; the valid ones are applied,
//   a rejected one keeps its last good version;
// - `removed_resources` are dropped;
// - a stream that ends after responses is normal (istiod closes them to
//   rebalance): reconnect at once; a stream that ends without one is a failure:
//   retry with exponential backoff and jitter, reset by the next response.
// It never throws on what the server sends: undecodable envelopes end the
// stream (grpc-js reports INTERNAL) and count as failures.
import { EventEmitter } from 'node:events';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { Backoff, type BackoffPolicy } from '../util/backoff.js';
import { DELTA_METHOD, deltaRequestCodec, deltaResponseCodec, type DeltaRequest, type DeltaResponseMessage, type Node } from './protos.js';

/** One resource of a response, its Any unpacked to type and bytes. */
export interface DeltaResource { name: string; version: string; typeUrl: string; value: Uint8Array }
export interface DeltaUpdate { nonce: string; systemVersion: string; resources: DeltaResource[]; removed: string[] }
export interface Rejection { name: string; error: string }
/** Applies what it accepts; returns the resources it rejected (then NACKed). */
export type DeltaHandler = (update: DeltaUpdate) => Rejection[];

export const DEFAULT_BACKOFF: BackoffPolicy = { initialMs: 500, maxMs: 30_000 };
const MAX_NACK_CHARS = 4096;

export interface DeltaClientOptions {
  target: string;
  /**
   * Credentials and channel options, built at the first attempt that can
   * (until then each attempt fails and is retried): a CA file mounted late is
   * picked up, not fatal.
   */
  channel: () => { credentials: grpc.ChannelCredentials; options?: grpc.ChannelOptions };
  /** Headers of every stream, read again at each (re)connect: a projected token rotates. */
  metadata?: () => Record<string, string>;
  node: Node;
  typeUrl: string;
  handler: DeltaHandler;
  log: Logger;
  backoff?: BackoffPolicy;
}

export interface StreamEnd {
  /** gRPC status code (0 OK) and its details. */
  code: number;
  details: string;
  /** Responses received on the stream that ended. */
  responses: number;
  /** A stream that ended without any response. */
  failure: boolean;
  retryInMs: number;
}

export interface DeltaClientEvents {
  /** A stream opened; `initialVersions` resources announced in its first request. */
  stream: [{ attempt: number; initialVersions: Record<string, string> }];
  response: [DeltaUpdate];
  ack: [{ nonce: string }];
  nack: [{ nonce: string; message: string; rejected: Rejection[] }];
  end: [StreamEnd];
}

export class DeltaClient extends EventEmitter<DeltaClientEvents> {
  private client?: grpc.Client;
  private call?: grpc.ClientDuplexStream<DeltaRequest, DeltaResponseMessage>;
  private timer?: NodeJS.Timeout;
  private stopped = true;
  private attempts = 0;
  /** name -> version of every resource this client holds. */
  private readonly known = new Map<string, string>();
  private readonly backoff: BackoffPolicy;
  /** Streams that ended without a response, in a row. */
  private readonly retry: Backoff;

  constructor(private readonly opts: DeltaClientOptions) {
    super();
    this.backoff = opts.backoff ?? DEFAULT_BACKOFF;
    this.retry = new Backoff(this.backoff);
  }

  private channel(): grpc.Client {
    if (this.client) return this.client;
    const ch = this.opts.channel();
    this.client = new grpc.Client(this.opts.target, ch.credentials, {
      'grpc.initial_reconnect_backoff_ms': this.backoff.initialMs,
      'grpc.max_reconnect_backoff_ms': this.backoff.maxMs,
      'grpc.max_receive_message_length': 64 * 1024 * 1024,
      ...ch.options,
    });
    return this.client;
  }

  /** Versions of the resources held now (what a reconnect announces). */
  versions(): Record<string, string> {
    return Object.fromEntries(this.known);
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.open();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    const call = this.call;
    this.call = undefined;
    call?.cancel();
    this.client?.close();
    this.client = undefined;
  }

  private open(): void {
    if (this.stopped) return;
    this.attempts++;
    const md = new grpc.Metadata();
    let client: grpc.Client;
    try {
      client = this.channel();
    } catch (e) {
      this.ended({ code: grpc.status.UNAVAILABLE, details: `credentials: ${(e as Error).message}` }, 0);
      return;
    }
    try {
      for (const [k, v] of Object.entries(this.opts.metadata?.() ?? {})) md.set(k, v);
    } catch (e) {
      // A token file not there yet (kubelet writes it): a failed attempt, retried.
      this.ended({ code: grpc.status.UNAUTHENTICATED, details: (e as Error).message }, 0);
      return;
    }
    const call = client.makeBidiStreamRequest<DeltaRequest, DeltaResponseMessage>(
      DELTA_METHOD, (m) => deltaRequestCodec.encode(m), (b) => deltaResponseCodec.decode(b), md);
    this.call = call;
    let responses = 0;
    let done = false;
    const finish = (s: { code: number; details: string }) => {
      if (done) return;
      done = true;
      if (this.call === call) this.call = undefined;
      this.ended(s, responses);
    };
    call.on('data', (r: DeltaResponseMessage) => {
      responses++;
      this.retry.reset();
      this.respond(call, r);
    });
    call.on('status', (s: grpc.StatusObject) => finish(s));
    // 'error' carries the same status; listening keeps it from being thrown.
    call.on('error', (e: grpc.ServiceError) => finish({ code: e.code ?? grpc.status.UNKNOWN, details: e.details ?? e.message }));
    const initialVersions = this.versions();
    call.write({
      node: this.opts.node,
      type_url: this.opts.typeUrl,
      // Subscribing to nothing by name is a wildcard subscription (all of the type).
      resource_names_subscribe: [],
      initial_resource_versions: initialVersions,
    });
    this.emit('stream', { attempt: this.attempts, initialVersions });
  }

  private respond(call: grpc.ClientDuplexStream<DeltaRequest, DeltaResponseMessage>, r: DeltaResponseMessage): void {
    const rejected: Rejection[] = [];
    const accepted: DeltaResource[] = [];
    for (const res of r.resources) {
      if (!res.name) { rejected.push({ name: '(unnamed)', error: 'resource without a name' }); continue; }
      const any = res.resource;
      if (!any) { rejected.push({ name: res.name, error: 'resource without a body' }); continue; }
      if (any.type_url !== this.opts.typeUrl) {
        rejected.push({ name: res.name, error: `type ${JSON.stringify(any.type_url)}, expected ${this.opts.typeUrl}` });
        continue;
      }
      accepted.push({ name: res.name, version: res.version ?? '', typeUrl: this.opts.typeUrl, value: any.value ?? new Uint8Array() });
    }
    const update: DeltaUpdate = { nonce: r.nonce, systemVersion: r.system_version_info, resources: accepted, removed: r.removed_resources };
    let handlerRejected: Rejection[];
    try {
      handlerRejected = r.type_url === this.opts.typeUrl || r.type_url === ''
        ? this.opts.handler(update)
        : accepted.map((a) => ({ name: a.name, error: `response of type ${r.type_url}` }));
    } catch (e) {
      handlerRejected = accepted.map((a) => ({ name: a.name, error: `handler failed: ${(e as Error).message}` }));
    }
    rejected.push(...handlerRejected);
    const bad = new Set(rejected.map((x) => x.name));
    for (const a of accepted) if (!bad.has(a.name)) this.known.set(a.name, a.version);
    for (const name of r.removed_resources) this.known.delete(name);
    this.emit('response', update);
    if (rejected.length === 0) {
      // Emitted once handed to the transport: a caller that stops then has answered.
      call.write({ type_url: this.opts.typeUrl, response_nonce: r.nonce }, () => this.emit('ack', { nonce: r.nonce }));
      return;
    }
    // Bounded: a response of thousands of bad resources must not make a huge request.
    const all = rejected.map((x) => `${x.name}: ${x.error}`).join('; ');
    const message = all.length > MAX_NACK_CHARS ? `${all.slice(0, MAX_NACK_CHARS)}... (${rejected.length} resources rejected)` : all;
    // 3 = INVALID_ARGUMENT, as Envoy reports a rejected config.
    this.opts.log.warn({ typeUrl: this.opts.typeUrl, nonce: r.nonce, rejected: rejected.length, error: message }, 'xDS resources rejected (NACK); their last good versions stay');
    call.write({ type_url: this.opts.typeUrl, response_nonce: r.nonce, error_detail: { code: grpc.status.INVALID_ARGUMENT, message } },
      () => this.emit('nack', { nonce: r.nonce, message, rejected }));
  }

  private ended(s: { code: number; details: string }, responses: number): void {
    if (this.stopped) return;
    const failure = responses === 0;
    // After responses: the server closed a working stream; come back at once (jittered).
    const retryInMs = failure ? this.retry.failed() : Math.round(this.backoff.initialMs * Math.random() / 2);
    const end: StreamEnd = { code: s.code, details: s.details, responses, failure, retryInMs };
    this.emit('end', end);
    // A listener may stop the client on what ended the stream (xds-dump does): no retry then, and no line saying so.
    if (this.stopped) return;
    const line = { target: this.opts.target, code: grpc.status[s.code] ?? s.code, details: s.details, responses, retryInMs };
    if (failure) this.opts.log.warn(line, 'xDS stream failed; retrying with backoff');
    else this.opts.log.info(line, 'xDS stream closed by the server after responses; reconnecting');
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.open(), retryInMs);
  }
}
