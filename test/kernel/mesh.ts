// The fixture of the real-kernel tests: two Istio-style pods (client pod
// "a" calling a service whose endpoint is pod "b"), each with HAProxy as its
// sidecar behind Istio's REDIRECT rules, and the datapath attached to the
// topology's own cgroup with pins under a unique bpffs directory. Everything
// is removed by close(), which the tests call in a finally.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import { before, after } from 'node:test';
import { assertKernelAccess } from './gate.js';
import { Datapath, type MapCapacity } from '../../src/datapath/datapath.js';
import { netnsCookieOfPath } from '../../src/datapath/netns.js';
import type { Counters } from '../../src/datapath/layout.js';
import { LineProcess } from '../../src/util/lines.js';
import type { Topology, Pod } from '../../lab/topology/topology.js';
import { createSidecarPair, serviceAddress, APP_PORT } from '../../lab/topology/pair.js';

export { APP_PORT };
type EnableOptions = Parameters<Datapath['enable']>[1];
const here = path.dirname(fileURLToPath(import.meta.url));
export const peerScript = path.join(here, '../peers/stream-peer.js');
export const caseScript = path.resolve(here, '../../../test/peers/sockcases.py');

export interface MeshOptions {
  label: string;
  crossPod?: boolean;
  enable?: boolean;
  keepaliveIdleSeconds?: number;
  /** After a backpressure fallback, TCP at least this long; default the agent's (10 s). */
  backpressureHoldoffMs?: number;
  /** Map sizes of the datapath (default the agent's). */
  capacity?: MapCapacity;
}

/** The counters that moved in `delta` ("name=n ..."), for a failure's message or a log line. */
export function movedCounters(delta: Counters): string {
  return Object.entries(delta).filter(([, v]) => v !== 0n).map(([k, v]) => `${k}=${v}`).join(' ') || 'none moved';
}

export class Mesh {
  private readonly procs: ChildProcess[] = [];

  private constructor(
    readonly topo: Topology,
    readonly a: Pod,
    readonly b: Pod,
    /** Replaced by tests that reopen the datapath. */
    public dp: Datapath,
    readonly cookieA: bigint,
    readonly cookieB: bigint,
    readonly pinRoot: string,
  ) {}

  static async create(opts: MeshOptions): Promise<Mesh> {
    const { topo, a, b } = await createSidecarPair(opts.label);
    const pinRoot = `/sys/fs/bpf/${topo.prefix}`;
    let dp: Datapath | undefined;
    try {
      dp = Datapath.open({ cgroupPath: topo.cgroupDir, pinRoot, ...(opts.capacity ? { capacity: opts.capacity } : {}) });
      dp.setConfig({ crossPod: opts.crossPod ?? false, keepaliveIdleSeconds: opts.keepaliveIdleSeconds ?? 0, backpressureHoldoffMs: opts.backpressureHoldoffMs });
      // The pods' IPs, as the agent knows them: only these pair across pods (I1).
      dp.setPodAddresses(new Map([[a.ip4, netnsCookieOfPath(a.netnsPath)], [a.ip6, netnsCookieOfPath(a.netnsPath)],
        [b.ip4, netnsCookieOfPath(b.netnsPath)], [b.ip6, netnsCookieOfPath(b.netnsPath)]]));
      const mesh = new Mesh(topo, a, b, dp, netnsCookieOfPath(a.netnsPath), netnsCookieOfPath(b.netnsPath), pinRoot);
      if (opts.enable ?? true) mesh.enableAll();
      return mesh;
    } catch (e) {
      if (dp) dp.uninstall();
      fs.rmSync(pinRoot, { recursive: true, force: true });
      await topo.destroy();
      throw e;
    }
  }

  /**
   * One case's policy on a pair shared by several: the node's cross-pod flag,
   * and each pod enabled with these options or 'off' (disabled, its counters
   * cleared).
   */
  setPolicy(crossPod: boolean, a: EnableOptions | 'off', b: EnableOptions | 'off'): this {
    for (const [cookie, opts] of [[this.cookieA, a], [this.cookieB, b]] as const) {
      this.dp.disable(cookie);
      if (opts !== 'off') this.dp.enable(cookie, opts);
    }
    this.dp.setConfig({ crossPod, keepaliveIdleSeconds: 0 });
    return this;
  }

  enableAll(): void {
    this.dp.enable(this.cookieA);
    this.dp.enable(this.cookieB);
  }

  vip(family: 4 | 6 = 4): string {
    return serviceAddress(family);
  }

  /** Starts a process in a pod and collects its JSON lines. */
  start(pod: Pod, cmd: string, args: string[]): PeerProcess {
    const child = pod.spawn(cmd, args);
    this.procs.push(child);
    return new PeerProcess(child);
  }

  startPeer(pod: Pod, args: string[]): PeerProcess {
    return this.start(pod, process.execPath, [peerScript, ...args]);
  }

  /**
   * Makes a fresh stream-peer server at `address` send once, to a probe from
   * `from` (default pod a through the sidecars to the VIP): the datapath
   * registers an application's accepted sockets only once their listener
   * was seen reading non-blocking (I6 in bpf/), and every new listener
   * starts unknown.
   */
  async learnListener(from: Pod = this.a, address: string = this.vip()): Promise<void> {
    const p = this.startPeer(from, ['probe', '--connect', address]);
    const lines = await p.finished();
    if (!lines.some((o) => o.event === 'probed')) throw new Error(`listener probe of ${address} failed: ${JSON.stringify(lines)} ${p.errorOutput}`);
  }

  /** Runs one case of test/peers/sockcases.py in a pod; resolves with its result object. */
  async runCase(pod: Pod, name: string, port: number, env: Record<string, string> = {}): Promise<Record<string, unknown>> {
    const p = this.startCase(pod, name, port, env);
    await p.finished();
    const line = p.objects.find((o) => o.case === name);
    if (!line) throw new Error(`case ${name} printed no result: ${p.errorOutput}`);
    return line.result as Record<string, unknown>;
  }

  startCase(pod: Pod, name: string, port: number, env: Record<string, string> = {}): PeerProcess {
    const child = pod.spawn('python3', [caseScript, name, String(port)], { env: { ...process.env, ...env } });
    this.procs.push(child);
    return new PeerProcess(child);
  }

  counters(): Counters {
    return this.dp.counters();
  }

  async close(): Promise<void> {
    for (const p of this.procs) p.kill('SIGKILL');
    const errors: unknown[] = [];
    try { this.dp.uninstall(); } catch (e) { errors.push(e); }
    fs.rmSync(this.pinRoot, { recursive: true, force: true });
    try { await this.topo.destroy(); } catch (e) { errors.push(e); }
    if (errors.length) throw new AggregateError(errors, 'mesh cleanup incomplete');
  }
}

/** A child whose stdout is JSON lines; wait for an object matching a predicate or for exit. */
export class PeerProcess extends LineProcess {
  readonly objects: Record<string, unknown>[] = [];

  protected override onLine(line: string): void {
    try { this.objects.push(JSON.parse(line) as Record<string, unknown>); } catch { this.objects.push({ raw: line }); }
  }

  /** Resolves with the first object (seen or to come) matching pred; rejects if the process exits first. */
  async waitFor(pred: (o: Record<string, unknown>) => boolean, what = 'line'): Promise<Record<string, unknown>> {
    const parse = (l: string) => { try { return JSON.parse(l) as Record<string, unknown>; } catch { return { raw: l }; } };
    return parse(await this.waitForLine((l) => pred(parse(l)), what));
  }

  /** Kills it and resolves once it is gone (its ports free for the next case on the same pods). */
  async stop(): Promise<void> {
    this.child.kill('SIGKILL');
    await this.exited;
  }

  ready(): Promise<Record<string, unknown>> {
    return this.waitFor((o) => o.event === 'ready', 'ready');
  }

  async finished(): Promise<Record<string, unknown>[]> {
    await super.done();
    return this.objects;
  }

  get errorOutput(): string {
    return this.stderr;
  }
}

/**
 * The usual suite fixture: a Mesh created before the suite's tests (after an
 * optional setup) and removed after them, failed or not.
 */
export function useMesh(opts: MeshOptions, setup?: (m: Mesh) => Promise<void>): () => Mesh {
  let mesh: Mesh | undefined;
  before(async () => {
    assertKernelAccess();
    mesh = await Mesh.create(opts);
    await setup?.(mesh);
  });
  after(async () => { await mesh?.close(); });
  return () => {
    if (!mesh) throw new Error('mesh fixture not created');
    return mesh;
  };
}
