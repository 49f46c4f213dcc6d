// Codecs for the map keys and values of bpf/accel_maps.h. The offsets here
// are checked against the BTF of the object at open (checkLayouts), so the
// two languages cannot drift apart silently (docs/design.md 5.9).
import { isIPv4, isIPv6 } from 'node:net';
import type { StructLayout } from './native.js';

import { BTF_ENUMS } from './btf.generated.js';

// Roles and flag bits come from the object's BTF (scripts/gen-btf.mjs), never copied.
export const ROLE_CLIENT = BTF_ENUMS.accel_role.ACCEL_ROLE_CLIENT;
export const ROLE_SERVER = BTF_ENUMS.accel_role.ACCEL_ROLE_SERVER;
export const NETNS_ENABLED = BTF_ENUMS.accel_netns_flag.ACCEL_NETNS_ENABLED;
/** A mesh workload known on this node: may pair across pods (when cross-pod pairing is on). */
export const NETNS_CROSS_POD = BTF_ENUMS.accel_netns_flag.ACCEL_NETNS_CROSS_POD;
export const NETNS_ADDRS_KNOWN = BTF_ENUMS.accel_netns_flag.ACCEL_NETNS_ADDRS_KNOWN;
/** The pod's sidecar captures none of its applications' outbound (inbound) TCP: their sockets are judged by their other end. */
export const NETNS_OUTBOUND_DIRECT = BTF_ENUMS.accel_netns_flag.ACCEL_NETNS_OUTBOUND_DIRECT;
export const NETNS_INBOUND_DIRECT = BTF_ENUMS.accel_netns_flag.ACCEL_NETNS_INBOUND_DIRECT;
export const CFG_CROSS_POD = BTF_ENUMS.accel_cfg_flag.ACCEL_CFG_CROSS_POD;
/** Only the sidecar's sockets are paired: this kernel cannot serve an application's transparently. */
export const CFG_SIDECAR_ONLY = BTF_ENUMS.accel_cfg_flag.ACCEL_CFG_SIDECAR_ONLY;
/** Istio's sidecar uid (istio-iptables --proxy-uid): its sockets are taken to be event-driven. */
export const DEFAULT_PROXY_UID = 1337;
export const LISTENER_NONBLOCKING = BTF_ENUMS.accel_listener_flag.ACCEL_LISTENER_NONBLOCKING;
export const LISTENER_BLOCKING = BTF_ENUMS.accel_listener_flag.ACCEL_LISTENER_BLOCKING;
export const MAX_EXCLUDE_PORTS = 16;

export type CounterEnumerator = Exclude<keyof typeof BTF_ENUMS.accel_counter, 'ACCEL_CNT_MAX'>;

/**
 * The TypeScript name of each enumerator of enum accel_counter. Keyed by the
 * C name, so order comes from BTF: an enumerator added, removed or renamed in
 * C fails the compile here until it is named (or dropped) in this table.
 */
export const COUNTER_TS_NAMES = {
  ACCEL_CNT_SOCKETS_SEEN: 'socketsSeen',
  ACCEL_CNT_SOCKETS_REGISTERED: 'socketsRegistered',
  ACCEL_CNT_SOCKETS_PAIRED: 'socketsPaired',
  ACCEL_CNT_PAIRING_MISSES: 'pairingMisses',
  ACCEL_CNT_REDIRECTED_MSGS: 'redirectedMessages',
  ACCEL_CNT_REDIRECTED_BYTES: 'redirectedBytes',
  ACCEL_CNT_TCP_MSGS: 'tcpMessages',
  ACCEL_CNT_FALLBACK_NO_PEER: 'fallbackNoPeer',
  ACCEL_CNT_FALLBACK_BACKPRESSURE: 'fallbackBackpressure',
  ACCEL_CNT_FALLBACK_EXCLUDED: 'fallbackExcluded',
  ACCEL_CNT_FALLBACK_DISABLED: 'fallbackDisabled',
  ACCEL_CNT_FALLBACK_ULP: 'fallbackUlp',
  ACCEL_CNT_FALLBACK_EARLY_DATA: 'fallbackEarlyData',
  ACCEL_CNT_FALLBACK_REPAIR: 'fallbackRepair',
  ACCEL_CNT_FALLBACK_KEY_CONFLICT: 'fallbackKeyConflict',
  ACCEL_CNT_FALLBACK_CROSS_POD: 'fallbackCrossPod',
  ACCEL_CNT_SOCKETS_RELEASED: 'socketsReleased',
  ACCEL_CNT_FALLBACK_BLOCKING: 'fallbackBlocking',
  ACCEL_CNT_FALLBACK_UNKNOWN_READER: 'fallbackUnknownReader',
  ACCEL_CNT_FALLBACK_TURNED_BLOCKING: 'fallbackTurnedBlocking',
  ACCEL_CNT_FALLBACK_SIDECAR_ONLY: 'fallbackSidecarOnly',
  ACCEL_CNT_FALLBACK_MEMORY_PRESSURE: 'fallbackMemoryPressure',
  ACCEL_CNT_TCP_HELD_BACK: 'tcpHeldBack',
  ACCEL_CNT_FALLBACK_MAP_FULL: 'fallbackMapFull',
  ACCEL_CNT_FALLBACK_SOCKET_BUSY: 'fallbackSocketBusy',
  ACCEL_CNT_FALLBACK_INSERT_FAILED: 'fallbackInsertFailed',
  ACCEL_CNT_LEAVE_DEFERRED: 'leaveDeferred',
  ACCEL_CNT_SOCKETS_WITHDRAWN: 'socketsWithdrawn',
  ACCEL_CNT_DIRECTIONS_RESUMED: 'directionsResumed',
  ACCEL_CNT_FALLBACK_NEVER_PAIRS: 'fallbackNeverPairs',
  ACCEL_CNT_FALLBACK_SOCKET_OPTION: 'fallbackSocketOption',
} as const satisfies Record<CounterEnumerator, string>;

export type CounterName = (typeof COUNTER_TS_NAMES)[CounterEnumerator];
/** Counter names in slot order (their enum accel_counter values, from BTF). */
export const COUNTER_NAMES: readonly CounterName[] = (Object.keys(COUNTER_TS_NAMES) as CounterEnumerator[])
  .sort((a, b) => BTF_ENUMS.accel_counter[a] - BTF_ENUMS.accel_counter[b])
  .map((k) => COUNTER_TS_NAMES[k]);
export type Counters = Record<CounterName, bigint>;

/** What each counter gained from `before` to `after`. */
export function countersDelta(after: Counters, before: Counters): Counters {
  return Object.fromEntries(COUNTER_NAMES.map((k) => [k, after[k] - before[k]])) as Counters;
}

interface FieldSpec {
  name: string; offset: number; size: number;
  /** Its name in older builds, at the same place: their generations are read and written the same way. */
  formerly?: string;
}

/** The layouts this file encodes; each must equal the object's BTF. */
export const EXPECTED_LAYOUTS: Record<string, { size: number; members: FieldSpec[] }> = {
  accel_conn_key: {
    size: 40,
    members: [
      { name: 'scope', offset: 0, size: 8 },
      { name: 'client_ip', offset: 8, size: 16 },
      { name: 'client_seq', offset: 24, size: 4 },
      { name: 'server_seq', offset: 28, size: 4 },
      { name: 'client_port', offset: 32, size: 2 },
      { name: 'role', offset: 34, size: 1 },
      { name: 'pad0', offset: 35, size: 1 },
      { name: 'pad1', offset: 36, size: 4 },
      { name: 'btf_anchor', offset: 40, size: 0 },
    ],
  },
  accel_netns_policy: {
    size: 8 + 2 * MAX_EXCLUDE_PORTS,
    members: [
      { name: 'flags', offset: 0, size: 4 },
      { name: 'exclude_count', offset: 4, size: 4 },
      { name: 'exclude_ports', offset: 8, size: 2 * MAX_EXCLUDE_PORTS },
      { name: 'btf_anchor', offset: 8 + 2 * MAX_EXCLUDE_PORTS, size: 0 },
    ],
  },
  accel_config: {
    size: 16,
    members: [
      { name: 'flags', offset: 0, size: 4 },
      { name: 'keepalive_idle_s', offset: 4, size: 4 },
      { name: 'proxy_uid', offset: 8, size: 4 },
      // Padding (pad0) in builds before it: those programs never read it, so writing it there is harmless.
      { name: 'backpressure_holdoff_ms', offset: 12, size: 4, formerly: 'pad0' },
      { name: 'btf_anchor', offset: 16, size: 0 },
    ],
  },
  accel_listener_key: {
    size: 16,
    members: [
      { name: 'netns_cookie', offset: 0, size: 8 },
      { name: 'port', offset: 8, size: 2 },
      { name: 'pad0', offset: 10, size: 2 },
      { name: 'pad1', offset: 12, size: 4 },
      { name: 'btf_anchor', offset: 16, size: 0 },
    ],
  },
  accel_pod_addr: {
    size: 16,
    members: [{ name: 'ip', offset: 0, size: 16 }],
  },
  accel_counters: {
    size: 8 * COUNTER_NAMES.length,
    members: [
      { name: 'v', offset: 0, size: 8 * COUNTER_NAMES.length },
      { name: 'btf_anchor', offset: 8 * COUNTER_NAMES.length, size: 0 },
    ],
  },
};

/** Differences between what this file encodes and the object's BTF; empty when equal. */
export function layoutMismatches(name: string, actual: StructLayout): string[] {
  const want = EXPECTED_LAYOUTS[name];
  if (!want) return [`no codec for struct ${name}`];
  const out: string[] = [];
  if (want.size !== actual.size) out.push(`struct ${name}: size ${actual.size}, codec expects ${want.size}`);
  const got = new Map(actual.members.map((m) => [m.name, m]));
  for (const m of want.members) {
    const a = got.get(m.name) ?? (m.formerly === undefined ? undefined : got.get(m.formerly));
    if (!a) out.push(`struct ${name}: no member ${m.name}`);
    else if (a.offset !== m.offset || a.size !== m.size) {
      out.push(`struct ${name}.${m.name}: offset ${a.offset} size ${a.size}, codec expects offset ${m.offset} size ${m.size}`);
    }
  }
  for (const a of actual.members) {
    if (!want.members.some((m) => m.name === a.name || (m.formerly === a.name && !got.has(m.name)))) out.push(`struct ${name}: member ${a.name} has no codec`);
  }
  return out;
}

export function encodeU64(v: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(v);
  return b;
}

/**
 * struct accel_pod_addr: an IP address as the kernel keys sockets, IPv6
 * bytes, IPv4 v4-mapped (::ffff:a.b.c.d). Throws RangeError for anything
 * that is not one IP address.
 */
export function encodePodAddress(ip: string): Buffer {
  const b = Buffer.alloc(EXPECTED_LAYOUTS.accel_pod_addr!.size);
  const v4 = (text: string, at: number) => {
    text.split('.').forEach((o, i) => { b[at + i] = Number(o); });
  };
  if (isIPv4(ip)) {
    b.writeUInt16BE(0xffff, 10);
    v4(ip, 12);
    return b;
  }
  if (!isIPv6(ip) || ip.includes('%')) throw new RangeError(`not an IP address: ${JSON.stringify(ip)}`);
  // A dotted IPv4 tail (::ffff:1.2.3.4) is two groups.
  const tail = /(\d+\.\d+\.\d+\.\d+)$/.exec(ip);
  const head = tail ? ip.slice(0, -tail[1]!.length) + '0:0' : ip;
  const [left = '', right] = head.split('::');
  const groups = (t: string) => (t === '' ? [] : t.split(':'));
  const l = groups(left);
  const r = right === undefined ? [] : groups(right);
  const all = [...l, ...Array<string>(8 - l.length - r.length).fill('0'), ...r];
  all.forEach((g, i) => b.writeUInt16BE(parseInt(g, 16), 2 * i));
  if (tail) v4(tail[1]!, 12);
  return b;
}

/** The text of a struct accel_pod_addr (IPv4 for a v4-mapped address). */
export function decodePodAddress(b: Buffer): string {
  expectLength('struct accel_pod_addr', b, EXPECTED_LAYOUTS.accel_pod_addr!.size);
  if (b.subarray(0, 10).every((x) => x === 0) && b.readUInt16BE(10) === 0xffff) return Array.from(b.subarray(12)).join('.');
  const full = Array.from({ length: 8 }, (_, i) => b.readUInt16BE(2 * i).toString(16)).join(':');
  return new URL(`http://[${full}]/`).hostname.slice(1, -1); // the shortest form (RFC 5952)
}

export function encodeU32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v);
  return b;
}

export interface NetnsPolicy {
  enabled: boolean; excludePorts: number[]; crossPod: boolean;
  /** The pod's addresses are in pod_addrs (ACCEL_NETNS_ADDRS_KNOWN); absent: false. */
  addressesKnown?: boolean;
  /** Its sidecar captures none of its applications' outbound TCP (ACCEL_NETNS_OUTBOUND_DIRECT); absent: false. */
  outboundDirect?: boolean;
  /** Nor inbound (ACCEL_NETNS_INBOUND_DIRECT); absent: false. */
  inboundDirect?: boolean;
}

export function encodeNetnsPolicy(p: NetnsPolicy): Buffer {
  if (p.excludePorts.length > MAX_EXCLUDE_PORTS) {
    throw new RangeError(`at most ${MAX_EXCLUDE_PORTS} excluded ports, got ${p.excludePorts.length}`);
  }
  const b = Buffer.alloc(EXPECTED_LAYOUTS.accel_netns_policy!.size);
  b.writeUInt32LE((p.enabled ? NETNS_ENABLED : 0) | (p.crossPod ? NETNS_CROSS_POD : 0) | (p.addressesKnown ? NETNS_ADDRS_KNOWN : 0)
    | (p.outboundDirect ? NETNS_OUTBOUND_DIRECT : 0) | (p.inboundDirect ? NETNS_INBOUND_DIRECT : 0), 0);
  b.writeUInt32LE(p.excludePorts.length, 4);
  p.excludePorts.forEach((port, i) => {
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new RangeError(`bad port ${port}`);
    b.writeUInt16LE(port, 8 + 2 * i);
  });
  return b;
}

/** A value buffer of another length than the codec's: never decoded. */
function expectLength(what: string, b: Buffer, want: number): void {
  if (b.length !== want) throw new RangeError(`${what}: ${b.length} bytes, the codec reads ${want}`);
}

export function decodeNetnsPolicy(b: Buffer): NetnsPolicy {
  expectLength('struct accel_netns_policy', b, EXPECTED_LAYOUTS.accel_netns_policy!.size);
  const n = Math.min(b.readUInt32LE(4), MAX_EXCLUDE_PORTS);
  const ports: number[] = [];
  for (let i = 0; i < n; i++) ports.push(b.readUInt16LE(8 + 2 * i));
  const flags = b.readUInt32LE(0);
  return {
    enabled: (flags & NETNS_ENABLED) !== 0, excludePorts: ports, crossPod: (flags & NETNS_CROSS_POD) !== 0,
    addressesKnown: (flags & NETNS_ADDRS_KNOWN) !== 0,
    outboundDirect: (flags & NETNS_OUTBOUND_DIRECT) !== 0, inboundDirect: (flags & NETNS_INBOUND_DIRECT) !== 0,
  };
}

export interface NodeConfig {
  crossPod: boolean;
  keepaliveIdleSeconds: number;
  /** The sidecar's uid; default DEFAULT_PROXY_UID. */
  proxyUid?: number;
  /** Pair only the sidecar's sockets (the self-test's safe mode); default false. */
  sidecarOnly?: boolean;
  /** After a backpressure fallback a direction stays on TCP at least this long; default DEFAULT_BACKPRESSURE_HOLDOFF_MS. */
  backpressureHoldoffMs?: number;
}

/**
 * Each backpressure fallback costs the connection a retransmission timeout
 * (I7 holds the first TCP bytes until the redirected ones are read; measured:
 * one 200 ms RTO per fallback). A bulk stream through a slower hop overflows
 * again as soon as it is back, so a direction may come back only this long
 * after its last one: at most one such stall per 10 s, about 2% of a bulk
 * stream's time, while a long-lived connection that overflowed once gets the
 * redirect back.
 */
export const DEFAULT_BACKPRESSURE_HOLDOFF_MS = 10_000;

export function encodeConfig(c: NodeConfig): Buffer {
  const b = Buffer.alloc(EXPECTED_LAYOUTS.accel_config!.size);
  b.writeUInt32LE((c.crossPod ? CFG_CROSS_POD : 0) | (c.sidecarOnly ? CFG_SIDECAR_ONLY : 0), 0);
  b.writeUInt32LE(c.keepaliveIdleSeconds, 4);
  b.writeUInt32LE(c.proxyUid ?? DEFAULT_PROXY_UID, 8);
  b.writeUInt32LE(c.backpressureHoldoffMs ?? DEFAULT_BACKPRESSURE_HOLDOFF_MS, 12);
  return b;
}

export function decodeConfig(b: Buffer): Required<NodeConfig> {
  expectLength('struct accel_config', b, EXPECTED_LAYOUTS.accel_config!.size);
  const flags = b.readUInt32LE(0);
  return {
    crossPod: (flags & CFG_CROSS_POD) !== 0, keepaliveIdleSeconds: b.readUInt32LE(4), proxyUid: b.readUInt32LE(8),
    sidecarOnly: (flags & CFG_SIDECAR_ONLY) !== 0, backpressureHoldoffMs: b.readUInt32LE(12),
  };
}

export function zeroCounters(): Counters {
  return Object.fromEntries(COUNTER_NAMES.map((n) => [n, 0n])) as Counters;
}

/** Sums a per-CPU value buffer of `cpus` slots of `slot` bytes into counters (this build's order). */
export function addPerCpuCounters(into: Counters, buf: Buffer, cpus: number, slot: number): void {
  if (slot < 8 * COUNTER_NAMES.length) throw new RangeError(`per-CPU struct accel_counters: ${slot}-byte slots hold fewer than ${COUNTER_NAMES.length} counters`);
  addPerCpuCountersAt(into, buf, cpus, slot, new Map(COUNTER_NAMES.map((n, i) => [n, i])));
}

/**
 * Sums a per-CPU struct accel_counters of any generation into counters:
 * `indexes` maps each counter that generation has to its index in v[]
 * (from its own enum accel_counter); the others are left as they are.
 */
export function addPerCpuCountersAt(into: Counters, buf: Buffer, cpus: number, slot: number, indexes: ReadonlyMap<CounterName, number>): void {
  expectLength(`per-CPU struct accel_counters (${cpus} CPUs)`, buf, cpus * slot);
  for (const [name, i] of indexes) {
    if (8 * i + 8 > slot) throw new RangeError(`counter ${name} at index ${i} lies outside a ${slot}-byte slot`);
    for (let cpu = 0; cpu < cpus; cpu++) into[name] += buf.readBigUInt64LE(cpu * slot + 8 * i);
  }
}

/**
 * Where each of this build's counters sits in a generation whose enum
 * accel_counter (from its BTF) is `enumerators`; the counters it lacks, and
 * its enumerators this build has no name for.
 */
export function counterIndexes(enumerators: readonly { name: string; value: number }[]): { indexes: Map<CounterName, number>; missing: CounterName[]; unknown: string[] } {
  const known = COUNTER_TS_NAMES as Record<string, CounterName | undefined>;
  const indexes = new Map<CounterName, number>();
  const unknown: string[] = [];
  for (const e of enumerators) {
    if (e.name === 'ACCEL_CNT_MAX') continue;
    const name = Object.hasOwn(known, e.name) ? known[e.name] : undefined;
    if (name) indexes.set(name, e.value); else unknown.push(e.name);
  }
  return { indexes, missing: COUNTER_NAMES.filter((n) => !indexes.has(n)), unknown };
}

/** Sums one per-CPU u64 (a lookup of `cpus` 8-byte slots). */
export function sumPerCpuU64(buf: Buffer, cpus: number): bigint {
  expectLength(`per-CPU u64 (${cpus} CPUs)`, buf, 8 * cpus);
  let sum = 0n;
  for (let cpu = 0; cpu < cpus; cpu++) sum += buf.readBigUInt64LE(8 * cpu);
  return sum;
}
