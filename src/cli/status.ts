// `sidecar-accel status` and `uninstall`: work from the pins alone, whether or
// not an agent runs.
import fs from 'node:fs';
import { Datapath, GenerationLayoutError, generationDirs } from '../datapath/datapath.js';
import type { Counters } from '../datapath/layout.js';

export interface GenerationStatus {
  generation: string;
  pinDir: string;
  attached: boolean;
  sockopsLinked: boolean;
  skMsgAttached: boolean;
  /** The ingress gate (I7): a reader's TCP bytes wait while redirected ones are unread. */
  ingressLinked: boolean;
  sockets: number;
  /** Null (with layoutProblems) when this generation's config has a layout this build cannot read. */
  crossPod: boolean | null;
  /** The self-test's safe mode: only the sidecar's own sockets are paired. */
  sidecarOnly: boolean | null;
  keepaliveIdleSeconds: number | null;
  /** Policies are null when their layout in this generation differs from this build's. */
  enabledNetns: NetnsStatus[];
  /** Null when countersUnreadable says why. */
  counters: Counters | null;
  /** Where this generation's values differ from this build's codecs (an older or newer build). */
  layoutProblems: string[];
  countersUnreadable: string | null;
  /** This build's counters the generation does not have (shown as 0). */
  countersMissing: string[];
}

/** One enabled netns; its policy fields are null when this build cannot read the generation's layout. */
export interface NetnsStatus {
  netnsCookie: string;
  excludePorts: number[] | null;
  crossPod: boolean | null;
  /** The agent published the pod's addresses: a sidecar's socket to no pod of this node is never registered. */
  addressesKnown: boolean | null;
  /** Its sidecar captures none of the applications' outbound (inbound) TCP: their sockets are judged by their other end. */
  outboundDirect: boolean | null;
  inboundDirect: boolean | null;
  counters: Counters | null;
}

/** The value, or null when this build cannot read that generation's layout of it. */
function orUnreadable<T>(read: () => T): T | null {
  try {
    return read();
  } catch (e) {
    if (e instanceof GenerationLayoutError) return null;
    throw e;
  }
}

export function datapathStatus(pinRoot: string, cgroupPath: string): GenerationStatus[] {
  return generationDirs(pinRoot).map((dir) => {
    const dp = Datapath.openPinned(dir, cgroupPath);
    try {
      const a = dp.attachment();
      const cfg = orUnreadable(() => dp.config());
      const policies = orUnreadable(() => dp.enabledNetns());
      const layout = dp.layout;
      return {
        generation: dp.generation, pinDir: dir, attached: dp.linked, sockopsLinked: a.sockopsLinked, skMsgAttached: a.skMsgAttached, ingressLinked: a.ingressLinked,
        sockets: dp.socketCount(), crossPod: cfg?.crossPod ?? null, sidecarOnly: cfg?.sidecarOnly ?? null, keepaliveIdleSeconds: cfg?.keepaliveIdleSeconds ?? null,
        enabledNetns: dp.enabledNetnsCookies().map((cookie) => {
          const p = policies?.get(cookie);
          return {
            netnsCookie: cookie.toString(), excludePorts: p?.excludePorts ?? null, crossPod: p?.crossPod ?? null,
            addressesKnown: p ? p.addressesKnown ?? false : null, outboundDirect: p ? p.outboundDirect ?? false : null, inboundDirect: p ? p.inboundDirect ?? false : null,
            counters: orUnreadable(() => dp.netnsCounters(cookie)),
          };
        }),
        counters: orUnreadable(() => dp.counters()),
        layoutProblems: layout.problems, countersUnreadable: layout.countersUnreadable, countersMissing: layout.countersMissing,
      };
    } finally {
      dp.close();
    }
  });
}

export function statusText(gens: GenerationStatus[], pinRoot: string): string {
  if (gens.length === 0) return `nothing pinned under ${pinRoot}: sidecar-accel is not installed on this node\n`;
  const out: string[] = [];
  for (const g of gens) {
    out.push(`generation ${g.generation} (${g.pinDir}): ${g.attached ? 'attached' : 'retired, draining'}; sockops ${g.sockopsLinked ? 'linked' : 'not linked'}, sk_msg ${g.skMsgAttached ? 'attached' : 'not attached'}, ingress gate ${g.ingressLinked ? 'linked' : 'NOT linked'}; ${g.sockets} sockets registered`);
    if (g.layoutProblems.length) out.push(`  built with other map layouts than this build: its settings and policies cannot be read here (${g.layoutProblems.join('; ')})`);
    if (g.crossPod !== null) out.push(`  cross-pod pairing ${g.crossPod ? 'on' : 'off'}; keepalive ${g.keepaliveIdleSeconds ? `${g.keepaliveIdleSeconds} s` : 'off'}; ${g.sidecarOnly ? 'sidecar-only mode (this kernel cannot serve application sockets transparently; see the agent log)' : 'applications\' sockets paired when event-driven'}`);
    out.push(`  enabled network namespaces: ${g.enabledNetns.length ? g.enabledNetns.map(netnsText).join(', ') : 'none'}`);
    const c = g.counters;
    if (!c) {
      out.push(`  counters cannot be read by this build: ${g.countersUnreadable ?? 'unknown layout'}`);
      continue;
    }
    if (g.countersMissing.length) out.push(`  counters this generation does not have (shown as 0): ${g.countersMissing.join(', ')}`);
    out.push(`  paired ${c.socketsPaired}, misses ${c.pairingMisses}, released to TCP ${c.socketsReleased}, never registered (cannot pair) ${c.fallbackNeverPairs}, redirected ${c.redirectedMessages} msgs / ${c.redirectedBytes} bytes, back from TCP ${c.directionsResumed}, fallbacks: backpressure ${c.fallbackBackpressure}, no peer ${c.fallbackNoPeer}, cross-pod off ${c.fallbackCrossPod}, excluded ${c.fallbackExcluded}, disabled ${c.fallbackDisabled}, socket options ${c.fallbackSocketOption}`);
    out.push(`  left alone for their readers: blocking ${c.fallbackBlocking}, listener not yet seen event-driven ${c.fallbackUnknownReader}, turned blocking ${c.fallbackTurnedBlocking}, sidecar-only kernel ${c.fallbackSidecarOnly}`);
  }
  return out.join('\n') + '\n';
}

/** "cookie (what sets it apart)": only what differs from an enabled netns with nothing known about it. */
function netnsText(n: NetnsStatus): string {
  const notes = [
    n.crossPod === false ? 'in-pod only' : '',
    n.excludePorts?.length ? `excluding ${n.excludePorts.join(',')}` : '',
    n.addressesKnown ? 'addresses known' : '',
    n.outboundDirect ? 'outbound not captured' : '',
    n.inboundDirect ? 'inbound not captured' : '',
  ].filter(Boolean);
  return n.netnsCookie + (notes.length ? ` (${notes.join('; ')})` : '');
}

/** Detaches and unpins every generation; paired connections keep working until they close. */
export function uninstallAll(pinRoot: string, cgroupPath: string): string[] {
  const removed: string[] = [];
  for (const dir of generationDirs(pinRoot)) {
    Datapath.openPinned(dir, cgroupPath).uninstall();
    removed.push(dir);
  }
  for (const leftover of fs.existsSync(pinRoot) ? fs.readdirSync(pinRoot) : []) {
    fs.rmSync(`${pinRoot}/${leftover}`, { recursive: true, force: true }); // retired copies of this build
  }
  if (fs.existsSync(pinRoot)) fs.rmdirSync(pinRoot);
  return removed;
}
