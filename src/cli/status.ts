// `sidecar-accel status` and `uninstall`: work from the pins alone, whether or
// not an agent runs.
import fs from 'node:fs';
import { Datapath, generationDirs } from '../datapath/datapath.js';
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
  crossPod: boolean;
  /** The self-test's safe mode: only the sidecar's own sockets are paired. */
  sidecarOnly: boolean;
  keepaliveIdleSeconds: number;
  enabledNetns: { netnsCookie: string; excludePorts: number[]; crossPod: boolean; counters: Counters | null }[];
  counters: Counters;
}

export function datapathStatus(pinRoot: string, cgroupPath: string): GenerationStatus[] {
  return generationDirs(pinRoot).map((dir) => {
    const dp = Datapath.openPinned(dir, cgroupPath);
    try {
      const a = dp.attachment();
      const cfg = dp.config();
      return {
        generation: dp.generation, pinDir: dir, attached: dp.linked, sockopsLinked: a.sockopsLinked, skMsgAttached: a.skMsgAttached, ingressLinked: a.ingressLinked,
        sockets: dp.socketCount(), crossPod: cfg.crossPod, sidecarOnly: cfg.sidecarOnly, keepaliveIdleSeconds: cfg.keepaliveIdleSeconds,
        enabledNetns: [...dp.enabledNetns()].map(([cookie, p]) => ({ netnsCookie: cookie.toString(), excludePorts: p.excludePorts, crossPod: p.crossPod, counters: dp.netnsCounters(cookie) })),
        counters: dp.counters(),
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
    out.push(`  cross-pod pairing ${g.crossPod ? 'on' : 'off'}; keepalive ${g.keepaliveIdleSeconds ? `${g.keepaliveIdleSeconds} s` : 'off'}; ${g.sidecarOnly ? 'sidecar-only mode (this kernel cannot serve application sockets transparently; see the agent log)' : 'applications\' sockets paired when event-driven'}`);
    out.push(`  enabled network namespaces: ${g.enabledNetns.length ? g.enabledNetns.map((n) => n.netnsCookie + (n.crossPod ? '' : ' (in-pod only)') + (n.excludePorts.length ? ` (excluding ${n.excludePorts.join(',')})` : '')).join(', ') : 'none'}`);
    const c = g.counters;
    out.push(`  paired ${c.socketsPaired}, misses ${c.pairingMisses}, released to TCP ${c.socketsReleased}, redirected ${c.redirectedMessages} msgs / ${c.redirectedBytes} bytes, fallbacks: backpressure ${c.fallbackBackpressure}, no peer ${c.fallbackNoPeer}, cross-pod off ${c.fallbackCrossPod}, excluded ${c.fallbackExcluded}, disabled ${c.fallbackDisabled}`);
    out.push(`  left alone for their readers: blocking ${c.fallbackBlocking}, listener not yet seen event-driven ${c.fallbackUnknownReader}, turned blocking ${c.fallbackTurnedBlocking}, sidecar-only kernel ${c.fallbackSidecarOnly}`);
  }
  return out.join('\n') + '\n';
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
