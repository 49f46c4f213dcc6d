// Reads the TCP sockets of every enabled netns with the connection iterator
// (bpf/conns_iter.bpf.c), linked to each pinned generation's per-socket
// state, and builds the report. Works from the pins alone, agent or not.
import fs from 'node:fs';
import path from 'node:path';
import { Datapath, GenerationLayoutError, generationDirs } from '../datapath/datapath.js';
import { connsIterObjectPath, native } from '../datapath/native.js';
import type { NetnsPolicy } from '../datapath/layout.js';
import { decodeRecords, isConnected, recordLayoutProblems, type ConnRecord } from './records.js';
import { BYTES_NOTE, buildConnections, connectionsOfPod, type Connection, type EndInput, type PodBytes } from './connections.js';

export interface ConnsOptions {
  pinRoot: string;
  cgroupPath: string;
  /** "namespace/name" of the pod of a netns, when known (the agent's workloads). */
  podOf?: (netnsCookie: bigint) => string | null;
  /** Only the connections with an end in this pod ("namespace/name"). */
  pod?: string;
  /** The host's /proc, where the enabled netns are looked for; default /proc. */
  procRoot?: string;
  /** The iterator object; default the one this build ships. */
  iterObject?: string;
}

export interface ConnsReport {
  connections: Connection[];
  /** Per enabled pod: redirected bytes (the only byte count the datapath keeps). */
  pods: PodBytes[];
  note: string;
  /** What could not be read (a netns not found, a generation of another layout). */
  problems: string[];
}

export class ConnsError extends Error {}
/** --pod names no enabled pod. */
export class UnknownPodError extends ConnsError {}

/**
 * Opens the netns with these cookies, found under /run/netns and
 * <procRoot>/<pid>/ns/net (one look per netns inode). Paths stay valid
 * until close(): they name open handles, not pids that may be reused.
 */
export function openNetnsByCookie(wanted: Set<bigint>, procRoot = '/proc'): { paths: Map<bigint, string>; close(): void } {
  const paths = new Map<bigint, string>();
  const kept: number[] = [];
  const seen = new Set<string>();
  const list = (dir: string) => { try { return fs.readdirSync(dir); } catch { return []; } };
  const candidates = [
    ...list('/run/netns').map((n) => path.join('/run/netns', n)),
    ...list(procRoot).filter((n) => /^\d+$/.test(n)).map((pid) => path.join(procRoot, pid, 'ns/net')),
  ];
  const n = native();
  for (const c of candidates) {
    if (paths.size === wanted.size) break;
    let fd: number;
    try { fd = fs.openSync(c, 'r'); } catch { continue; } // gone, or not a netns
    let keep = false;
    try {
      const st = fs.fstatSync(fd, { bigint: true });
      const id = `${st.dev}:${st.ino}`;
      if (seen.has(id)) continue;
      seen.add(id);
      const cookie = n.netnsCookie(`/proc/self/fd/${fd}`);
      if (wanted.has(cookie) && !paths.has(cookie)) {
        paths.set(cookie, `/proc/self/fd/${fd}`);
        keep = true;
      }
    } catch {
      // A process that exited between the listing and here.
    } finally {
      if (keep) kept.push(fd);
      else fs.closeSync(fd);
    }
  }
  return { paths, close: () => { for (const fd of kept) fs.closeSync(fd); } };
}

/** Every enabled pod's TCP connections as the kernel holds them now. */
export function collectConns(opts: ConnsOptions): ConnsReport {
  const iterObject = opts.iterObject ?? connsIterObjectPath;
  const n = native();
  const layout = recordLayoutProblems(n.structLayout(iterObject, 'conn_record'));
  if (layout.length) throw new ConnsError(`${iterObject} and src/conns/records.ts disagree: ${layout.join('; ')}`);
  const dirs = generationDirs(opts.pinRoot);
  if (dirs.length === 0) throw new ConnsError(`nothing pinned under ${opts.pinRoot}: sidecar-accel is not installed on this node`);
  const problems: string[] = [];
  const dps: Datapath[] = [];
  const links: { generation: string; fd: number }[] = [];
  let netns: ReturnType<typeof openNetnsByCookie> | undefined;
  try {
    for (const d of dirs) dps.push(Datapath.openPinned(d, opts.cgroupPath));
    // Policies and settings are the attached generation's: older ones only drain.
    const current = dps.find((d) => d.linked) ?? dps[dps.length - 1]!;
    let policies: Map<bigint, NetnsPolicy>;
    let cfg: { crossPod: boolean; sidecarOnly: boolean; proxyUid: number };
    try {
      policies = current.enabledNetns();
      cfg = current.config();
    } catch (e) {
      if (e instanceof GenerationLayoutError) throw new ConnsError(`the attached generation cannot be read by this build: ${e.message}`);
      throw e;
    }
    for (const dp of dps) {
      try {
        links.push({ generation: dp.generation, fd: dp.connsIterator(iterObject) });
      } catch (e) {
        if (!(e instanceof GenerationLayoutError)) throw e;
        problems.push(`${e.message}: its sockets are shown without their datapath state`);
      }
    }
    if (links.length === 0) throw new ConnsError(`no generation's per-socket state can be read: ${problems.join('; ')}`);
    const cookies = [...policies.keys()];
    if (opts.pod && !cookies.some((c) => opts.podOf?.(c) === opts.pod)) {
      throw new UnknownPodError(`pod ${opts.pod} is not an enabled pod on this node${opts.podOf ? '' : ' (pod names come from the agent, which did not answer)'}`);
    }
    netns = openNetnsByCookie(new Set(cookies), opts.procRoot);
    const ends: EndInput[] = [];
    const pods: PodBytes[] = [];
    for (const cookie of cookies) {
      const pod = opts.podOf?.(cookie) ?? null;
      let redirectedBytes: bigint | null = null;
      try { redirectedBytes = current.netnsCounters(cookie)?.redirectedBytes ?? null; } catch (e) { if (!(e instanceof GenerationLayoutError)) throw e; }
      pods.push({ pod, netnsCookie: cookie.toString(), redirectedBytes });
      const p = netns.paths.get(cookie);
      if (!p) {
        problems.push(`enabled netns ${cookie}${pod ? ` (${pod})` : ''}: not found under ${opts.procRoot ?? '/proc'} or /run/netns; its sockets are not listed`);
        continue;
      }
      // One socket is read once per generation; its state lives in at most one of them.
      const bySocket = new Map<bigint, { record: ConnRecord; generation: string | null }>();
      for (const l of links) {
        for (const r of decodeRecords(n.iterRead(l.fd, p))) {
          if (!isConnected(r.tcpState)) continue;
          const had = bySocket.get(r.sockCookie);
          if (!had || (!had.record.state && r.state)) bySocket.set(r.sockCookie, { record: r, generation: r.state ? l.generation : null });
        }
      }
      for (const { record, generation } of bySocket.values()) ends.push({ netnsCookie: cookie, pod, generation, record });
    }
    let connections = buildConnections(ends, { policies, config: cfg });
    if (opts.pod) connections = connectionsOfPod(connections, opts.pod);
    return { connections, pods: opts.pod ? pods.filter((p) => p.pod === opts.pod) : pods, note: BYTES_NOTE, problems };
  } finally {
    netns?.close();
    for (const l of links) n.closeFd(l.fd);
    for (const d of dps) d.close();
  }
}
