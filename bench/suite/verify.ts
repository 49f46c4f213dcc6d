// What the kernel says about a bench round. Baseline rounds must run with no
// program of ours attached; accel rounds count only if the programs
// redirected at least 95% of the bytes the expected hops carried (a
// direction may fall back to TCP and, one day, come back).
import { native } from '../../src/datapath/native.js';
import { generationDirs } from '../../src/datapath/datapath.js';
import type { Counters } from '../../src/datapath/layout.js';
import type { Expectation } from './scenarios.js';

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

/** The least share of the bytes on the expected hops that the programs must have redirected for a round to count. */
export const MIN_REDIRECTED_SHARE = 0.95;
/**
 * What every segment on the pods' links carries besides payload, as the
 * link counts it: IPv4 (20) and TCP with timestamps (32), Linux's default;
 * the veth counts its Ethernet header (14) too, loopback does not.
 */
export const LINK_HEADER_BYTES: Record<string, number> = { lo: 52, eth0: 66 };
/** A SYN or SYN-ACK carries this many bytes of options more (MSS, SACK-permitted, window scale). */
export const SYN_EXTRA_BYTES = 8;
/** The largest payload one TCP segment can carry on these links (loopback's MTU less headers). */
const MAX_SEGMENT_PAYLOAD = 65_536 - 52;

/** The links of the pods that carry a scenario's expected hops: loopback in-pod, the veth across pods. */
export function hopLinks(expect: Expectation): string[] {
  return expect === 'all' ? ['lo', 'eth0'] : expect === 'in-pod' ? ['lo'] : [];
}

/** What went over TCP on the expected hops during a round, from the kernel's counters. */
export interface HopTraffic {
  /** Bytes the pods' hop links sent (ip -s link), and the headers of the packets they sent (LINK_HEADER_BYTES each). */
  bytes: number;
  headerBytes: number;
  /** Data segments the pods sent on any link (nstat TcpExtTCPOrigDataSent). */
  dataSegments: number;
  /**
   * Connections the pods opened on any link (nstat Tcp ActiveOpens +
   * PassiveOpens), one SYN or SYN-ACK each. Those of the cross-pod hop, not
   * on loopback, make the in-pod estimate lower by 16 bytes a connection.
   */
  opens: number;
}

/** TCP payload on the hops: the links' bytes less every packet's headers (pure ACKs carry none). */
export function tcpPayload(t: HopTraffic): number {
  return Math.max(0, t.bytes - t.headerBytes - SYN_EXTRA_BYTES * t.opens);
}

export interface Verdict {
  ok: boolean;
  /** Of the bytes the expected hops carried, the share the programs redirected (null where none is expected). */
  share: number | null;
  detail: string;
}

/**
 * Judges an accel round from the programs' counters over the round and what
 * TCP carried on the expected hops meanwhile: at least 95% of those bytes
 * must have been redirected. nstat cross-checks the links' count: the TCP
 * payload estimated from them must fit in the data segments nstat saw.
 */
export function judge(expect: Expectation, hops: HopTraffic | null, counters: Counters | null): Verdict {
  if (expect === 'none') return { ok: true, share: null, detail: 'baseline' };
  const c = counters;
  if (expect === 'unpaired') {
    // Nothing can pair: the programs must have seen the client's sockets and
    // left each alone (never registered), or passed every message to TCP.
    const seen = c ? c.fallbackNeverPairs + c.fallbackNoPeer + c.tcpMessages : 0n;
    const ok = !!c && seen > 0n && c.redirectedMessages === 0n && c.socketsPaired === 0n;
    return {
      ok, share: null,
      detail: c ? `programs left ${c.fallbackNeverPairs} sockets alone, passed ${c.fallbackNoPeer + c.tcpMessages} messages to TCP, redirected ${c.redirectedMessages}, paired ${c.socketsPaired}` : 'no counters',
    };
  }
  if (!c || !hops) return { ok: false, share: null, detail: 'no counters' };
  const redirected = Number(c.redirectedBytes);
  const tcp = tcpPayload(hops);
  const share = redirected + tcp > 0 ? redirected / (redirected + tcp) : 0;
  const consistent = tcp <= hops.dataSegments * MAX_SEGMENT_PAYLOAD;
  const what = `${(100 * share).toFixed(1)}% of the bytes on the ${expect === 'all' ? '' : 'in-pod '}hops redirected (${redirected} B by the programs, ~${tcp} B of TCP payload on ${hopLinks(expect).join('+')}; nstat: ${hops.dataSegments} data segments)`;
  if (!consistent) return { ok: false, share, detail: `${what}: the links' count and nstat disagree` };
  return { ok: redirected > 0 && share >= MIN_REDIRECTED_SHARE, share, detail: what };
}
