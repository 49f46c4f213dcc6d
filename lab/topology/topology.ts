// Istio-style pods on one machine, for real-kernel tests, the demo and the
// bench (docs/design.md 7): a pod is a network namespace with lo, a veth to a node
// bridge (itself in a "node" netns, so the host's network is never touched),
// IPv4 and IPv6 addresses and a cgroup v2 child; the sidecar is HAProxy run
// as uid/gid 1337 behind Istio's own REDIRECT rules.
//
// Every resource carries the topology's unique prefix and destroy() removes
// all of them; call it in a finally.
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import net from 'node:net';
import { once } from 'node:events';
import path from 'node:path';
import { run, type RunResult } from '../../src/util/exec.js';
import { cgroup2Root } from '../../src/datapath/mounts.js';
import { destroyCgroup, makeCgroup } from '../../src/datapath/cgroup.js';
import { istioCaptureRules, PROXY_UID } from './istio-rules.js';
export { PROXY_UID };
import { haproxyConfig, ADMIN_SOCKET, type SidecarRoutes } from './haproxy.js';


export const NODE_GW4 = '10.44.0.1';
export const NODE_GW6 = 'fd44::1';
/** A service VIP: never routed anywhere; Istio's capture sends it to 15001. */
export const SERVICE_VIP4 = '10.96.0.10';
export const SERVICE_VIP6 = 'fd96::10';

/**
 * Runs `ip` commands in one netns, one process for all: under an emulated
 * kernel (the kernel matrix) each process start costs a quarter second, and
 * a pod took a dozen of them.
 */
async function ipBatch(netns: string, commands: string[]): Promise<void> {
  await run('ip', ['-n', netns, '-batch', '-'], { input: commands.join('\n') + '\n' });
}

export interface TopologyOptions {
  /** Readable part of the prefix (letters and digits). */
  label?: string;
}

export class Topology {
  readonly pods: Pod[] = [];
  private readonly tmpDir: string;
  private destroyed = false;

  private constructor(
    /** Unique prefix of every resource: netns, links, cgroups, files. */
    readonly prefix: string,
    readonly nodeNetns: string,
    /** cgroup v2 directory holding every pod's cgroup (an attach point for tests). */
    readonly cgroupDir: string,
  ) {
    this.tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-`));
    // Traversable, not listable: processes run as other uids reach their own files here.
    fs.chmodSync(this.tmpDir, 0o711);
    // Lets sweepStaleTopologies() clean up after a process killed before its finally.
    fs.writeFileSync(path.join(this.tmpDir, 'owner.pid'), String(process.pid));
  }

  static async create(opts: TopologyOptions = {}): Promise<Topology> {
    const label = (opts.label ?? 't').replace(/[^a-z0-9]/gi, '').slice(0, 8) || 't';
    const prefix = `sa${label}${crypto.randomBytes(3).toString('hex')}`;
    const cgroupDir = path.join(cgroup2Root(), prefix);
    makeCgroup(cgroupDir);
    const topo = new Topology(prefix, `${prefix}-node`, cgroupDir);
    try {
      await run('ip', ['netns', 'add', topo.nodeNetns]);
      await ipBatch(topo.nodeNetns, [
        'link set lo up',
        'link add br0 type bridge',
        `addr add ${NODE_GW4}/24 dev br0`,
        `addr add ${NODE_GW6}/64 dev br0 nodad`,
        'link set br0 up',
      ]);
    } catch (e) {
      await topo.destroy();
      throw e;
    }
    return topo;
  }

  /** A file path private to this topology (removed by destroy). */
  file(name: string): string {
    return path.join(this.tmpDir, name);
  }

  /** A directory of this topology owned by `uid` (a process run as that uid keeps its files there). */
  privateDir(name: string, uid: number): string {
    const dir = this.file(name);
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    fs.chownSync(dir, uid, uid);
    return dir;
  }

  async addPod(name: string): Promise<Pod> {
    const index = this.pods.length + 2;
    if (index > 250) throw new RangeError('too many pods');
    const pod = new Pod(this, name, index);
    this.pods.push(pod);
    await pod.create();
    return pod;
  }

  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    const errors: unknown[] = [];
    const attempt = async (f: () => Promise<unknown>) => { try { await f(); } catch (e) { errors.push(e); } };
    for (const pod of this.pods) pod.killAll();
    await attempt(() => destroyCgroup(this.cgroupDir));
    for (const pod of this.pods) await attempt(() => run('ip', ['netns', 'del', pod.netns], { allowFail: true }));
    await attempt(() => run('ip', ['netns', 'del', this.nodeNetns], { allowFail: true }));
    fs.rmSync(this.tmpDir, { recursive: true, force: true });
    if (errors.length) throw new AggregateError(errors, `cleanup of ${this.prefix} incomplete`);
  }
}

export class Pod {
  readonly netns: string;
  readonly netnsPath: string;
  readonly ip4: string;
  readonly ip6: string;
  readonly cgroupDir: string;
  private readonly children = new Set<ChildProcess>();

  constructor(readonly topo: Topology, readonly name: string, index: number) {
    this.netns = `${topo.prefix}-${name}`;
    this.netnsPath = `/run/netns/${this.netns}`;
    this.ip4 = `10.44.0.${index}`;
    this.ip6 = `fd44::${index.toString(16)}`;
    this.cgroupDir = path.join(topo.cgroupDir, name);
    this.hostVeth = `${topo.prefix.slice(0, 11)}${index}`.slice(0, 15);
  }

  private readonly hostVeth: string;

  async create(): Promise<void> {
    makeCgroup(this.cgroupDir);
    await run('ip', ['netns', 'add', this.netns]);
    await ipBatch(this.topo.nodeNetns, [
      `link add ${this.hostVeth} type veth peer name eth0 netns ${this.netns}`,
      `link set ${this.hostVeth} master br0 up`,
    ]);
    await ipBatch(this.netns, [
      'link set lo up',
      // Istio's inbound passthrough binds ::6 for IPv6 like 127.0.0.6 for IPv4.
      'addr add ::6/128 dev lo',
      `addr add ${this.ip4}/24 dev eth0`,
      `addr add ${this.ip6}/64 dev eth0 nodad`,
      'link set eth0 up',
      `route add default via ${NODE_GW4}`,
      `route add ::/0 via ${NODE_GW6}`,
    ]);
  }

  /** Runs a command in this pod's netns as root and waits for it. */
  exec(cmd: string, args: string[], opts: { input?: string; allowFail?: boolean } = {}): Promise<RunResult> {
    return run('ip', ['netns', 'exec', this.netns, cmd, ...args], opts);
  }

  /** Istio's REDIRECT capture (iptables and ip6tables), verbatim. */
  async installIstioCapture(): Promise<void> {
    await this.exec('iptables-restore', [], { input: istioCaptureRules(4) });
    await this.exec('ip6tables-restore', [], { input: istioCaptureRules(6) });
  }

  /**
   * Starts a process inside this pod: it joins the pod's cgroup before it
   * execs, so not one of its sockets is created outside the pod.
   */
  spawn(cmd: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
    const child = spawn('bash', [
      '-c', 'echo $$ > "$0/cgroup.procs" && exec nsenter --net="$1" -- "${@:2}"',
      this.cgroupDir, this.netnsPath, cmd, ...args,
    ], { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    this.children.add(child);
    child.on('exit', () => this.children.delete(child));
    return child;
  }

  /**
   * HAProxy as the sidecar: outbound 15001 -> upstream, inbound 15006 -> the
   * app on this pod's address from 127.0.0.6 / ::6, running as uid/gid 1337.
   * Resolves once it has bound its ports (daemon mode: the launcher exits then).
   */
  async startSidecar(routes: SidecarRoutes): Promise<void> {
    const dir = this.topo.privateDir(`${this.name}-sidecar`, PROXY_UID);
    await this.startHaproxy('haproxy', haproxyConfig(routes, this, path.join(dir, 'haproxy.pid')), { uid: PROXY_UID, dir });
  }

  /** The sidecar's session log (TCP mode): one line per ended session, with its byte counts. */
  async sidecarSessions(): Promise<string> {
    const sock = path.join(this.topo.file(`${this.name}-sidecar`), ADMIN_SOCKET);
    const conn = net.connect({ path: sock });
    let out = '';
    conn.setEncoding('utf8').on('data', (d: string) => { out += d; });
    await once(conn, 'connect');
    conn.end('show events sessions\n');
    await once(conn, 'close');
    return out;
  }

  /**
   * HAProxy with `config` in daemon mode: resolves once it has bound its
   * ports (the launcher exits then); the pod's cgroup holds it for cleanup.
   */
  async startHaproxy(role: string, config: string, opts: { uid?: number; dir?: string } = {}): Promise<void> {
    const cfgFile = path.join(opts.dir ?? this.topo.file(''), `${this.name}-${role}.cfg`);
    fs.writeFileSync(cfgFile, config, { mode: 0o644 });
    const cmd = opts.uid === undefined ? ['haproxy'] : ['setpriv', `--reuid=${opts.uid}`, `--regid=${opts.uid}`, '--clear-groups', 'haproxy'];
    // From its own directory: haproxy returns to its start directory after reading the
    // config, and a proxy uid cannot enter a checkout under a root-only directory.
    const launcher = this.spawn(cmd[0]!, [...cmd.slice(1), '-D', '-f', cfgFile], { cwd: path.dirname(cfgFile) });
    let stderr = '';
    launcher.stderr?.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    const code = await new Promise<number | null>((resolve) => launcher.on('exit', resolve));
    if (code !== 0) throw new Error(`${role} (haproxy) in ${this.netns} failed to start (${code}): ${stderr}`);
  }

  killAll(): void {
    for (const c of this.children) c.kill('SIGKILL');
  }
}
