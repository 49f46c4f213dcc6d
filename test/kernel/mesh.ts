// The fixture of the real-kernel tests: two Istio-style pods (client pod
// "a" calling a service whose endpoint is pod "b"), each with HAProxy as its
// sidecar behind Istio's REDIRECT rules, and the datapath attached to the
// topology's own cgroup with pins under a unique bpffs directory. Everything
// is removed by close(), which the tests call in a finally.
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import { Datapath } from '../../src/datapath/datapath.js';
import { netnsCookieOfPath } from '../../src/datapath/netns.js';
import type { Counters } from '../../src/datapath/layout.js';
import { Topology, SERVICE_VIP4, SERVICE_VIP6, type Pod } from '../../src/topology/topology.js';

export const APP_PORT = 8080;
export const SERVICE_PORT = 80;
const here = path.dirname(fileURLToPath(import.meta.url));
export const peerScript = path.join(here, '../peers/stream-peer.js');
export const caseScript = path.resolve(here, '../../../test/peers/sockcases.py');

export interface MeshOptions {
  label: string;
  crossPod?: boolean;
  enable?: boolean;
  keepaliveIdleSeconds?: number;
}

export class Mesh {
  private readonly procs: ChildProcess[] = [];

  private constructor(
    readonly topo: Topology,
    readonly a: Pod,
    readonly b: Pod,
    readonly dp: Datapath,
    readonly cookieA: bigint,
    readonly cookieB: bigint,
    readonly pinRoot: string,
  ) {}

  static async create(opts: MeshOptions): Promise<Mesh> {
    const topo = await Topology.create({ label: opts.label });
    const pinRoot = `/sys/fs/bpf/${topo.prefix}`;
    let dp: Datapath | undefined;
    try {
      const a = await topo.addPod('a');
      const b = await topo.addPod('b');
      for (const p of [a, b]) await p.installIstioCapture();
      await a.startSidecar({ upstream4: `${b.ip4}:${APP_PORT}`, upstream6: `[${b.ip6}]:${APP_PORT}`, appPort: APP_PORT });
      await b.startSidecar({ upstream4: `${a.ip4}:${APP_PORT}`, upstream6: `[${a.ip6}]:${APP_PORT}`, appPort: APP_PORT });
      dp = Datapath.open({ cgroupPath: topo.cgroupDir, pinRoot });
      dp.setConfig({ crossPod: opts.crossPod ?? false, keepaliveIdleSeconds: opts.keepaliveIdleSeconds ?? 0 });
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

  enableAll(): void {
    this.dp.enable(this.cookieA);
    this.dp.enable(this.cookieB);
  }

  vip(family: 4 | 6 = 4): string {
    return family === 4 ? `${SERVICE_VIP4}:${SERVICE_PORT}` : `[${SERVICE_VIP6}]:${SERVICE_PORT}`;
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

  /** Runs one case of test/peers/sockcases.py in a pod; resolves with its result object. */
  async runCase(pod: Pod, name: string, port: number, env: Record<string, string> = {}): Promise<Record<string, unknown>> {
    const p = this.startCase(pod, name, port, env);
    await p.done();
    const line = p.lines.find((o) => o.case === name);
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

/** A child whose stdout is JSON lines; wait for a line matching a predicate or for exit. */
export class PeerProcess {
  readonly lines: Record<string, unknown>[] = [];
  private stderr = '';
  private waiters: { pred: (o: Record<string, unknown>) => boolean; resolve: (o: Record<string, unknown>) => void }[] = [];
  readonly exited: Promise<number | null>;

  constructor(readonly child: ChildProcess) {
    const rl = readline.createInterface({ input: child.stdout! });
    rl.on('line', (line) => {
      let o: Record<string, unknown>;
      try { o = JSON.parse(line) as Record<string, unknown>; } catch { o = { raw: line }; }
      this.lines.push(o);
      this.waiters = this.waiters.filter((w) => { if (w.pred(o)) { w.resolve(o); return false; } return true; });
    });
    child.stderr?.setEncoding('utf8').on('data', (d: string) => { this.stderr += d; });
    this.exited = new Promise((resolve) => child.on('exit', (code) => { rl.close(); resolve(code); }));
  }

  /** Resolves with the first line (already seen or future) matching pred; rejects if the process exits first. */
  waitFor(pred: (o: Record<string, unknown>) => boolean, what = 'line'): Promise<Record<string, unknown>> {
    const seen = this.lines.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      this.waiters.push({ pred, resolve });
      void this.exited.then((code) => reject(new Error(`process exited (${code}) before ${what}; stderr: ${this.stderr.slice(-2000)}`)));
    });
  }

  ready(): Promise<Record<string, unknown>> {
    return this.waitFor((o) => o.event === 'ready', 'ready');
  }

  async done(): Promise<Record<string, unknown>[]> {
    const code = await this.exited;
    if (code !== 0) throw new Error(`process exited ${code}: ${this.stderr.slice(-2000)}`);
    return this.lines;
  }

  get errorOutput(): string {
    return this.stderr;
  }
}
