// What the kernel says about a bench round. Baseline rounds must run with no
// program of ours attached; accel rounds count only if the kernel shows the
// expected hops bypassed TCP (ss: a paired socket sends no data segment).
import { native } from '../../src/datapath/native.js';
import { generationDirs } from '../../src/datapath/datapath.js';
import { SERVICE_VIP4, SERVICE_VIP6, type Pod } from '../../lab/topology/topology.js';
import { addr, ssSockets, type SsSocket } from '../../lab/measure/kernel.js';
import type { Counters } from '../../src/datapath/layout.js';
import type { Expectation } from './scenarios.js';

/** The share of expected-hop sockets that must show no TCP data for a round to count. */
export const MIN_REDIRECTED = 0.99;

/** Why programs of ours are attached where a baseline runs, or null when none are. */
export function attachedPrograms(pinRoot: string, cgroupDirs: string[]): string | null {
  const n = native();
  const pinned = generationDirs(pinRoot);
  if (pinned.length) return `pinned generations remain: ${pinned.join(', ')}`;
  for (const dir of cgroupDirs) {
    const fd = n.openPath(dir);
    try {
      const ids = n.progQuery(fd, 'cgroup_sock_ops');
      if (ids.length) return `sockops program(s) ${ids.join(', ')} attached to ${dir}`;
    } finally {
      n.closeFd(fd);
    }
  }
  return null;
}

function host(endpoint: string): string {
  return addr(endpoint).replace(/:\d+$/, '');
}

/**
 * A socket of an in-pod hop (app <-> its sidecar): one end on loopback (the
 * sidecar's 127.0.0.1:15001, the inbound passthrough's 127.0.0.6 / ::6) or
 * the app's own socket to the service VIP. Pod address to pod address is the
 * cross-pod hop.
 */
export function isInPodHop(s: SsSocket): boolean {
  return [s.local, s.peer].some((e) => {
    const h = host(e);
    return h.startsWith('127.') || h === '::1' || h === '::6' || h === SERVICE_VIP4 || h === SERVICE_VIP6;
  });
}

export interface SocketSample { key: string; inPod: boolean; dataSegsOut: number }

/** Established TCP sockets of the pods, with the data segments each has sent. */
export async function sampleSockets(pods: Pod[]): Promise<SocketSample[]> {
  const out: SocketSample[] = [];
  for (const pod of pods) {
    for (const s of await ssSockets(pod)) {
      if (s.state !== 'ESTAB') continue;
      out.push({ key: `${pod.netns} ${s.local} ${s.peer}`, inPod: isInPodHop(s), dataSegsOut: s.dataSegsOut });
    }
  }
  return out;
}

export interface Verdict {
  ok: boolean;
  /** Expected-hop sockets seen, and how many of them sent no TCP data. */
  hopSockets: number;
  bypassed: number;
  detail: string;
}

/**
 * Judges an accel round from socket samples taken while it ran (the largest
 * count per socket wins) and the programs' counters over the round.
 */
export function judge(expect: Expectation, samples: SocketSample[], counters: Counters | null): Verdict {
  const bySocket = new Map<string, SocketSample>();
  for (const s of samples) {
    const seen = bySocket.get(s.key);
    if (!seen || s.dataSegsOut > seen.dataSegsOut) bySocket.set(s.key, s);
  }
  const socks = [...bySocket.values()];
  if (expect === 'none') return { ok: true, hopSockets: 0, bypassed: 0, detail: 'baseline' };
  if (expect === 'unpaired') {
    // Nothing can pair: the programs must have seen the client's messages
    // and passed every one of them to TCP.
    const c = counters;
    const ok = !!c && c.fallbackNoPeer + c.tcpMessages > 0n && c.redirectedMessages === 0n && c.socketsPaired === 0n;
    return {
      ok, hopSockets: socks.length, bypassed: socks.filter((s) => s.dataSegsOut === 0).length,
      detail: c ? `programs passed ${c.fallbackNoPeer + c.tcpMessages} messages to TCP, redirected ${c.redirectedMessages}, paired ${c.socketsPaired}` : 'no counters',
    };
  }
  const hop = expect === 'all' ? socks : socks.filter((s) => s.inPod);
  const bypassed = hop.filter((s) => s.dataSegsOut === 0).length;
  const share = hop.length ? bypassed / hop.length : 0;
  const redirected = counters?.redirectedMessages ?? 0n;
  const ok = hop.length > 0 && share >= MIN_REDIRECTED && redirected > 0n;
  return {
    ok, hopSockets: hop.length, bypassed,
    detail: `${bypassed}/${hop.length} ${expect === 'all' ? '' : 'in-pod '}hop sockets sent no TCP data; ${redirected} messages redirected`,
  };
}
