// The network namespaces of pods, found from their UIDs the way kubelet names
// cgroups, in one pass over the host's /proc (mounted into the agent, e.g. at
// /host/proc) for every pod of a reconcile:
//   cgroupfs driver: .../kubepods/burstable/pod<uid>/<container id>
//   systemd driver:  .../kubepods-burstable-pod<uid with _ for ->.slice/cri-containerd-<id>.scope
//                    (CRI-O: crio-<id>.scope; the same pod part)
// Each process is read through a handle on its /proc/<pid> directory, which
// names that process and no later one with the same pid, and its netns is
// held open from the pass on (one handle per netns inode): a pid is never
// looked up again. A pod's netns is that of its oldest process (the sandbox)
// among those whose netns holds one of the pod's IPs; never the host's.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { native } from '../datapath/native.js';

const UID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const HEX = '[0-9a-f]';
const uidPattern = (sep: string) => [8, 4, 4, 4, 12].map((n) => `${HEX}{${n}}`).join(sep);
const DASHED = uidPattern('-');
const UNDERSCORED = uidPattern('_');
/** The pod part of a cgroup path, under either cgroup driver. */
const POD_IN_CGROUP = new RegExp(`(?:/pod(${DASHED})(?:/|$))|(?:-pod(${UNDERSCORED})\\.slice(?:/|$))`);

export function checkPodUid(podUid: string): void {
  if (!UID.test(podUid)) throw new RangeError(`not a pod UID: ${JSON.stringify(podUid)}`);
}

/** The pod UID a cgroup path (the part after "hierarchy:controllers:") belongs to, if any. */
export function podUidOfCgroup(cgroupPath: string): string | undefined {
  const m = POD_IN_CGROUP.exec(cgroupPath);
  if (!m) return undefined;
  return m[1] ?? m[2]!.replace(/_/g, '-');
}

/** Start time of a process in clock ticks since boot: field 22 of /proc/<pid>/stat. */
export function startTimeOfStat(stat: string): bigint {
  // comm (field 2) may hold spaces and parentheses: fields resume after the last ')'.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const v = rest[22 - 3];
  if (v === undefined || !/^\d+$/.test(v)) throw new RangeError(`not a /proc/<pid>/stat line: ${stat.slice(0, 80)}`);
  return BigInt(v);
}

/**
 * The host's netns inode: pid 1's under procRoot. Undefined where pid 1
 * cannot be read (a sandbox that hides it); the IP check still keeps the
 * host's netns out, since it holds no pod's IP.
 */
function hostNetnsIno(procRoot: string): bigint | undefined {
  try { return fs.statSync(path.join(procRoot, '1/ns/net'), { bigint: true }).ino; } catch { return undefined; }
}

export class PodNotRunningError extends Error {}
/** Processes of the pod run, but none in a netns that holds one of its IPs. */
export class PodNetnsMismatchError extends Error {}

/** One network namespace held open by a scan. */
export interface NetnsHandle {
  /** The netns inode (as in net:[inode]). */
  readonly ino: bigint;
  /** A path that opens this very netns while the scan is open (/proc/self/fd/<fd>). */
  readonly path: string;
}

interface Candidate { pid: number; startTime: bigint; handle: NetnsHandle & { fd: number } }

export interface PodNetnsScanOptions {
  /** The host's /proc; default /proc. */
  procRoot?: string;
  /** The host's netns inode; default that of pid 1 under procRoot (the host's init), when readable. */
  hostNetnsIno?: bigint;
  /** Interface addresses of a netns; default getifaddrs inside it (native). */
  addressesOf?: (nsPath: string) => string[];
}

export class PodNetnsScan {
  private readonly byPod = new Map<string, Candidate[]>();
  private readonly handles = new Map<bigint, NetnsHandle & { fd: number }>();
  private readonly addresses = new Map<bigint, string[]>();
  private readonly addressesOf: (nsPath: string) => string[];
  private closed = false;

  private constructor(opts: PodNetnsScanOptions) {
    this.addressesOf = opts.addressesOf ?? ((p) => native().netnsAddresses(p));
  }

  /** One pass over procRoot for every pod in `podUids`; close() releases what it holds. */
  static scan(podUids: Iterable<string>, opts: PodNetnsScanOptions = {}): PodNetnsScan {
    const wanted = new Set<string>();
    for (const u of podUids) { checkPodUid(u); wanted.add(u); }
    const s = new PodNetnsScan(opts);
    if (wanted.size === 0) return s;
    const procRoot = opts.procRoot ?? '/proc';
    const hostIno = opts.hostNetnsIno ?? hostNetnsIno(procRoot);
    try {
      for (const pid of fs.readdirSync(procRoot)) {
        if (/^\d+$/.test(pid)) s.visit(procRoot, Number(pid), wanted, hostIno);
      }
    } catch (e) {
      s.close();
      throw e;
    }
    for (const list of s.byPod.values()) list.sort((a, b) => (a.startTime < b.startTime ? -1 : a.startTime > b.startTime ? 1 : a.pid - b.pid));
    return s;
  }

  private visit(procRoot: string, pid: number, wanted: Set<string>, hostIno: bigint | undefined): void {
    let dir: number;
    try { dir = fs.openSync(path.join(procRoot, String(pid)), fs.constants.O_RDONLY | fs.constants.O_DIRECTORY); } catch { return; } // exited meanwhile
    try {
      // Everything below goes through `dir`: the process it was opened on, or
      // nothing (ESRCH/ENOENT) once that process is gone, whatever reuses its pid.
      const at = (f: string) => `/proc/self/fd/${dir}/${f}`;
      let cgroups: string;
      let stat: string;
      try {
        cgroups = fs.readFileSync(at('cgroup'), 'utf8');
        stat = fs.readFileSync(at('stat'), 'utf8');
      } catch { return; }
      const pod = cgroups.split('\n').map((l) => podUidOfCgroup(l.slice(l.indexOf(':', l.indexOf(':') + 1) + 1))).find((u) => u !== undefined);
      if (pod === undefined || !wanted.has(pod)) return;
      let fd: number;
      try { fd = fs.openSync(at('ns/net'), fs.constants.O_RDONLY); } catch { return; }
      const ino = fs.fstatSync(fd, { bigint: true }).ino;
      if (ino === hostIno) { fs.closeSync(fd); return; }
      let handle = this.handles.get(ino);
      if (handle) fs.closeSync(fd);
      else {
        handle = { ino, fd, path: `/proc/self/fd/${fd}` };
        this.handles.set(ino, handle);
      }
      const list = this.byPod.get(pod) ?? [];
      list.push({ pid, startTime: startTimeOfStat(stat), handle });
      this.byPod.set(pod, list);
    } finally {
      fs.closeSync(dir);
    }
  }

  /** Distinct network namespaces held (one per inode). */
  get netnsCount(): number {
    return this.handles.size;
  }

  /**
   * The pod's netns: that of its oldest process whose netns holds one of
   * `ips`. PodNotRunningError when no process of the pod runs outside the
   * host's netns or its IPs are not known yet; PodNetnsMismatchError when
   * none of its netns holds one of them.
   */
  netnsOf(podUid: string, ips: readonly string[]): NetnsHandle {
    if (this.closed) throw new Error('pod netns scan is closed');
    checkPodUid(podUid);
    const candidates = this.byPod.get(podUid) ?? [];
    if (candidates.length === 0) throw new PodNotRunningError(`pod ${podUid}: no running process in its cgroup outside the host's netns (not started yet, or gone)`);
    if (ips.length === 0) throw new PodNotRunningError(`pod ${podUid}: no pod IP known yet, so its netns cannot be told from another`);
    const want = new net.BlockList();
    for (const ip of ips) {
      const family = net.isIP(ip);
      if (family === 0) throw new RangeError(`pod ${podUid}: not an IP address: ${JSON.stringify(ip)}`);
      want.addAddress(ip, family === 4 ? 'ipv4' : 'ipv6');
    }
    const seen = new Map<bigint, string>();
    for (const c of candidates) {
      let addrs = this.addresses.get(c.handle.ino);
      if (!addrs) {
        addrs = this.addressesOf(c.handle.path);
        this.addresses.set(c.handle.ino, addrs);
      }
      if (!seen.has(c.handle.ino)) seen.set(c.handle.ino, `pid ${c.pid} net:[${c.handle.ino}] (${addrs.join(', ') || 'no addresses'})`);
      if (addrs.some((a) => { const f = net.isIP(a); return f !== 0 && want.check(a, f === 4 ? 'ipv4' : 'ipv6'); })) {
        return { ino: c.handle.ino, path: c.handle.path };
      }
    }
    throw new PodNetnsMismatchError(`pod ${podUid}: none of its processes' network namespaces holds its IPs ${ips.join(', ')}: ${[...seen.values()].join('; ')}`);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const h of this.handles.values()) fs.closeSync(h.fd);
    this.handles.clear();
  }
}
