// An in-process xDS server (grpc-js) for the tests: each stream is handed to
// the test, which reads the client's requests in order and sends responses,
// raw bytes or a closing status, one step at a time.
import { EventEmitter } from 'node:events';
import * as grpc from '@grpc/grpc-js';
import { adsServiceDefinition, deltaResponseCodec, istio, type DeltaRequestMessage, type DeltaResponse } from '../../src/xds/protos.js';
import { ADDRESS_TYPE_URL } from '../../src/xds/workload-api.js';

type Call = grpc.ServerDuplexStream<DeltaRequestMessage, DeltaResponse | Buffer>;

export class FakeStream {
  readonly requests: DeltaRequestMessage[] = [];
  private waiters: ((r: DeltaRequestMessage) => void)[] = [];
  private nonce = 0;
  ended = false;

  constructor(readonly id: number, readonly call: Call) {
    call.on('data', (r: DeltaRequestMessage) => {
      this.requests.push(r);
      this.waiters.shift()?.(r);
    });
    call.on('cancelled', () => { this.ended = true; });
    call.on('error', () => { this.ended = true; });
  }

  /** The n-th request of this stream (0: the first), as soon as it arrives. */
  request(n: number, ms = 10_000): Promise<DeltaRequestMessage> {
    if (this.requests[n]) return Promise.resolve(this.requests[n]!);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`stream ${this.id}: no request #${n} within ${ms} ms`)), ms);
      timer.unref();
      const wait = () => {
        if (this.requests[n]) { clearTimeout(timer); resolve(this.requests[n]!); } else this.waiters.push(wait);
      };
      this.waiters.push(wait);
    });
  }

  /** Sends a response with a fresh nonce; returns the nonce. */
  send(r: DeltaResponse): string {
    const nonce = `n${this.id}-${++this.nonce}`;
    this.call.write({ system_version_info: '', type_url: ADDRESS_TYPE_URL, resources: [], removed_resources: [], nonce, ...r });
    return nonce;
  }

  sendRaw(bytes: Buffer): void {
    this.call.write(bytes);
  }

  close(code: grpc.status = grpc.status.OK, details = ''): void {
    this.ended = true;
    if (code === grpc.status.OK) this.call.end();
    // grpc-js sends an error emitted on a server stream as the call's status.
    else this.call.emit('error', Object.assign(new Error(details), { code, details }));
  }
}

export class FakeXdsServer extends EventEmitter<{ stream: [FakeStream] }> {
  readonly server = new grpc.Server();
  readonly streams: FakeStream[] = [];
  port = 0;

  /** `withAds: false` serves no ADS at all (a server that knows nothing of xDS). */
  constructor(opts: { withAds?: boolean } = {}) {
    super();
    if (opts.withAds !== false) {
      const def = adsServiceDefinition();
      const m = def.DeltaAggregatedResources!;
      // Raw Buffers go out as they are: the tests send malformed envelopes too.
      const svc = { DeltaAggregatedResources: { ...m, responseSerialize: (x: DeltaResponse | Buffer) => (Buffer.isBuffer(x) ? x : deltaResponseCodec.encode(x)) } };
      this.server.addService(svc, {
        DeltaAggregatedResources: (call: Call) => {
          const s = new FakeStream(this.streams.length + 1, call);
          this.streams.push(s);
          this.emit('stream', s);
        },
      });
    }
  }

  async start(creds = grpc.ServerCredentials.createInsecure(), port = 0): Promise<string> {
    this.port = await new Promise<number>((resolve, reject) => {
      this.server.bindAsync(`127.0.0.1:${port}`, creds, (e, p) => (e ? reject(e) : resolve(p)));
    });
    return `127.0.0.1:${this.port}`;
  }

  /** The next stream a client opens (or the n-th, 1-based, if it already exists). */
  stream(n: number, ms = 10_000): Promise<FakeStream> {
    const have = this.streams[n - 1];
    if (have) return Promise.resolve(have);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { this.off('stream', on); reject(new Error(`no stream #${n} within ${ms} ms`)); }, ms);
      const on = () => {
        const s = this.streams[n - 1];
        if (s) { clearTimeout(timer); this.off('stream', on); resolve(s); }
      };
      this.on('stream', on);
    });
  }

  stop(): void {
    this.server.forceShutdown();
  }
}

export interface WorkloadFields {
  uid: string; name?: string; namespace?: string; node?: string; tunnel_protocol?: 'NONE' | 'HBONE' | number;
  canonical_name?: string; canonical_revision?: string; addresses?: Buffer[];
}

/** An Address resource as istiod sends it. */
export function workloadResource(w: WorkloadFields, version = '1', name = w.uid) {
  const t = istio.workload.Address;
  const value = Buffer.from(t.encode(t.fromObject({ workload: w })).finish());
  return { name, version, resource: { type_url: ADDRESS_TYPE_URL, value }, aliases: [] };
}
