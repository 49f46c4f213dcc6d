// The kernel side as one typed object: load (or adopt what is pinned),
// attach, enable/disable a network namespace, read counters, close.
//
// Pins live under <pinRoot>/gen-<sha of the BPF object>/ so that a build with
// a different object loads a generation of its own beside the old one, while
// a restart of the same build adopts its pins instead of reloading (hitless).
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import {
  BPF_ANY, BPF_NOEXIST, connsIterObjectPath, defaultObjectPath, isNativeError, native, type NativeAddon,
} from './native.js';
import {
  EXPECTED_LAYOUTS, addPerCpuCountersAt, counterIndexes, sumPerCpuU64, decodeConfig, decodeNetnsPolicy,
  decodePodAddress, encodeConfig, encodeNetnsPolicy, encodePodAddress, encodeU32, encodeU64, layoutMismatches, zeroCounters,
  type CounterName, type Counters, type NetnsPolicy, type NodeConfig,
} from './layout.js';
import { BTF_ENUMS } from './btf.generated.js';
import { bpffsContaining, cgroup2Root, cgroupId } from './mounts.js';
import { DEFAULT_SOCK_HASH_ENTRIES, MAX_MAP_ENTRIES, type MapCapacity } from './capacity.js';

export type { MapCapacity } from './capacity.js';

export const DEFAULT_PIN_ROOT = '/sys/fs/bpf/sidecar-accel';

/** Generation directories under the pin root. */
export function generationDirs(pinRoot: string): string[] {
  if (!fs.existsSync(pinRoot)) return [];
  return fs.readdirSync(pinRoot).filter((n) => n.startsWith('gen-')).map((n) => path.join(pinRoot, n)).sort();
}

const MAP_NAMES = [
  'sock_hash', 'sock_state', 'netns_policy', 'accel_cfg', 'counters', 'netns_counters',
  'listener_style', 'pod_addrs',
] as const;
type MapName = (typeof MAP_NAMES)[number];
/** Maps a generation pinned by an older build may lack (their handle is then -1). */
const OPTIONAL_MAPS: ReadonlySet<MapName> = new Set(['pod_addrs']);

/** How full a map is: its entries, counted from userspace, of the most it can hold. */
export interface MapFill { map: 'sock_hash' | 'pod_addrs'; entries: number; maxEntries: number }
const PROG_SOCKOPS = 'accel_sockops';
const PROG_MSG = 'accel_msg';
const PROG_INGRESS = 'accel_ingress';
const LINK_PIN = 'link_sockops';
/**
 * The ingress gate (I7 in bpf/) stays linked while a generation drains: its
 * paired sockets still need it after an upgrade retired the sockops link.
 */
const INGRESS_LINK_PIN = 'link_ingress';

export interface DatapathOptions {
  /** The compiled BPF object; default build/bpf/sidecar_accel.bpf.o. */
  objectPath?: string;
  /** cgroup v2 directory the sockops program is linked to; default the cgroup2 root. */
  cgroupPath?: string;
  /** bpffs directory holding every generation; default /sys/fs/bpf/sidecar-accel. */
  pinRoot?: string;
  /** Map sizes of a newly loaded generation (an adopted one keeps its own). */
  capacity?: MapCapacity;
}

export class DatapathError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'DatapathError';
  }
}

/** This build cannot read or write a generation's values: their layout differs. */
export class GenerationLayoutError extends DatapathError {
  constructor(message: string) {
    super(message);
    this.name = 'GenerationLayoutError';
  }
}

/**
 * How this build reads a generation's maps, found from that generation's own
 * BTF (the kernel keeps it with its maps): generations built from other
 * layouts drain beside this one, and status reads them all.
 */
export interface GenerationLayout {
  /** Where config and netns policy values differ from this build's codecs (those are then neither read nor written). */
  problems: string[];
  /** Why its counters cannot be read, or null when they can. */
  countersUnreadable: string | null;
  /** This build's counters that generation does not have (read as 0). */
  countersMissing: CounterName[];
}

/** Struct and enum of each value this build decodes, keyed by what reads them. */
const VALUE_TYPES = {
  config: { struct: 'accel_config', enum: 'accel_cfg_flag' },
  policy: { struct: 'accel_netns_policy', enum: 'accel_netns_flag' },
} as const;

/**
 * Flag bits added after a generation may have been built: its programs test
 * only the bits they know, so an older generation without one is written the
 * same way (the bit set is ignored there).
 */
const ADDED_FLAGS: ReadonlySet<string> = new Set(['ACCEL_NETNS_ADDRS_KNOWN', 'ACCEL_NETNS_OUTBOUND_DIRECT', 'ACCEL_NETNS_INBOUND_DIRECT']);

function enumDiff(name: keyof typeof BTF_ENUMS, theirs: { name: string; value: number }[] | null): string[] {
  if (!theirs) return [`enum ${name}: not in its BTF`];
  const ours = BTF_ENUMS[name] as Record<string, number>;
  const t = new Map(theirs.map((e) => [e.name, e.value]));
  const out: string[] = [];
  for (const [k, v] of Object.entries(ours)) {
    if (t.get(k) === v || (!t.has(k) && ADDED_FLAGS.has(k) && ![...t.values()].includes(v))) continue;
    out.push(`enum ${name}: ${k} is ${t.get(k) ?? 'absent'}, this build has ${v}`);
  }
  for (const k of t.keys()) if (!(k in ours)) out.push(`enum ${name}: ${k} unknown to this build`);
  return out;
}

/** Reads a generation's layout from the BTF of its maps (`btfId`). */
function generationLayout(n: NativeAddon, btfId: number): GenerationLayout & { problemsOf: Record<keyof typeof VALUE_TYPES, string[]>; counterAt: Map<CounterName, number>; counterSlot: number } {
  const problemsOf = { config: [] as string[], policy: [] as string[] };
  if (btfId === 0) {
    const none = ['its maps carry no BTF'];
    return { problems: none, problemsOf: { config: none, policy: none }, countersUnreadable: 'its maps carry no BTF', countersMissing: [], counterAt: new Map(), counterSlot: 0 };
  }
  const struct = (name: string) => {
    try { return layoutMismatches(name, n.structLayout(btfId, name)); } catch (e) { return [`struct ${name}: ${(e as Error).message}`]; }
  };
  for (const [what, t] of Object.entries(VALUE_TYPES) as [keyof typeof VALUE_TYPES, (typeof VALUE_TYPES)[keyof typeof VALUE_TYPES]][]) {
    problemsOf[what] = [...struct(t.struct), ...enumDiff(t.enum, n.enumValues(btfId, t.enum))];
  }
  let countersUnreadable: string | null = null;
  let counterAt = new Map<CounterName, number>();
  let countersMissing: CounterName[] = [];
  let counterSlot = 0;
  const names = n.enumValues(btfId, 'accel_counter');
  if (!names) {
    // Built before its counters were named in BTF: their order cannot be known.
    countersUnreadable = 'its BTF does not name its counters (enum accel_counter), so which slot holds which counter is unknown';
  } else {
    const c = counterIndexes(names);
    counterAt = c.indexes;
    countersMissing = c.missing;
    try {
      counterSlot = Math.ceil(n.structLayout(btfId, 'accel_counters').size / 8) * 8;
    } catch (e) {
      countersUnreadable = `struct accel_counters: ${(e as Error).message}`;
    }
  }
  return { problems: [...problemsOf.config, ...problemsOf.policy], problemsOf, countersUnreadable, countersMissing, counterAt, counterSlot };
}

export interface Attachment {
  cgroupPath: string;
  sockopsLinked: boolean;
  skMsgAttached: boolean;
  /** The cgroup_skb ingress gate (a reader's two queues, I7) is linked. */
  ingressLinked: boolean;
  /** Every program id linked to the cgroup for sockops, ours and others'. */
  cgroupSockopsProgIds: number[];
  /** Every program id linked to the cgroup for inet ingress, ours and others'. */
  cgroupIngressProgIds: number[];
  ourProgIds: { sockops: number; msg: number; ingress: number };
}

/**
 * What a refused load means, in one line naming the missing kernel feature
 * (the verifier's whole log stays in the error's cause).
 */
export function loadRefusal(libbpfMessage: string): string {
  const helper = /unknown func (bpf_\w+)#\d+/.exec(libbpfMessage);
  if (helper) return `this kernel cannot run sidecar-accel: its BPF verifier does not let sockops/sk_msg programs call ${helper[1]} (the programs need ${helper[1] === 'bpf_get_netns_cookie' ? 'Linux 5.15 or later' : 'a newer kernel'})`;
  if (/BPF_STX uses reserved fields/.test(libbpfMessage)) {
    return 'this kernel cannot run sidecar-accel: its BPF verifier lacks atomic fetch operations (Linux 5.12 or later; the programs need 5.15)';
  }
  const reloc = /failed to resolve CO-RE relocation <\w+> \[\d+\] (struct [\w.]+)/.exec(libbpfMessage)
    ?? /CO-RE relocat\w*.*?(struct [\w.]+)/.exec(libbpfMessage);
  // Our own map types are not in any kernel's BTF: a relocation against one is a build defect.
  if (reloc?.[1]?.startsWith('struct accel_')) return `the BPF object is broken (a CO-RE relocation against its own ${reloc[1]}): rebuild it; this is not the kernel's fault`;
  if (reloc) return `this kernel cannot run sidecar-accel: its BTF lacks ${reloc[1]}, which the programs read`;
  if (/EPERM|Operation not permitted/.test(libbpfMessage)) return 'loading the BPF programs was not permitted: run as root or with CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN and CAP_SYS_ADMIN';
  const first = libbpfMessage.split('\n').find((l) => /invalid|unknown|not supported|failed/i.test(l)) ?? libbpfMessage.split('\n')[0];
  return `this kernel refused the BPF programs: ${first?.trim()}`;
}

export function objectGeneration(objectPath: string): string {
  return crypto.createHash('sha256').update(fs.readFileSync(objectPath)).digest('hex').slice(0, 12);
}

/** Mounts bpffs at /sys/fs/bpf when the pin root is under it and nothing is mounted. */
export function ensureBpffs(pinRoot: string, n: NativeAddon = native()): void {
  if (bpffsContaining(pinRoot)) return;
  const base = '/sys/fs/bpf';
  if (pinRoot === base || pinRoot.startsWith(base + '/')) {
    try {
      n.mountBpffs(base);
      return;
    } catch (e) {
      throw new DatapathError(`no bpffs at ${base} and mounting one failed: ${(e as Error).message}`, { cause: e });
    }
  }
  throw new DatapathError(`pin directory ${pinRoot} is not on a bpffs mount`);
}

export class Datapath {
  private readonly n: NativeAddon;
  private readonly cpus: number;
  private readonly layoutOf: ReturnType<typeof generationLayout>;
  private closed = false;

  private constructor(
    readonly generation: string,
    readonly pinDir: string,
    readonly cgroupPath: string,
    /** True when this open adopted pins left by an earlier process. */
    readonly adopted: boolean,
    private readonly maps: Record<MapName, number>,
    private readonly progs: { sockops: number; msg: number; ingress: number },
    private link: number,
    private ingressLink: number,
  ) {
    this.n = native();
    this.cpus = this.n.possibleCpus();
    this.layoutOf = generationLayout(this.n, this.n.mapInfo(maps.netns_counters).btfId);
  }

  /** How this build reads this generation's maps (its own BTF against this build's codecs). */
  get layout(): GenerationLayout {
    const { problems, countersUnreadable, countersMissing } = this.layoutOf;
    return { problems: [...problems], countersUnreadable, countersMissing: [...countersMissing] };
  }

  /** Refuses to read or write a value whose layout in this generation differs from this build's. */
  private readable(what: keyof typeof VALUE_TYPES): void {
    const p = this.layoutOf.problemsOf[what];
    if (p.length) throw new GenerationLayoutError(`generation ${this.generation} was built with another ${VALUE_TYPES[what].struct} layout; this build cannot read or write it: ${p.join('; ')}`);
  }

  /** Loads and attaches, or adopts the pins of the same generation. */
  static open(opts: DatapathOptions = {}): Datapath {
    const n = native();
    const objectPath = opts.objectPath ?? defaultObjectPath;
    const pinRoot = opts.pinRoot ?? DEFAULT_PIN_ROOT;
    const cgroupPath = opts.cgroupPath ?? cgroup2Root();
    if (!fs.existsSync(objectPath)) throw new DatapathError(`BPF object ${objectPath} not found: run npm run build`);
    ensureBpffs(pinRoot, n);
    const generation = objectGeneration(objectPath);
    const pinDir = path.join(pinRoot, `gen-${generation}`);
    if (fs.existsSync(path.join(pinDir, LINK_PIN))) return Datapath.adopt(n, generation, pinDir, cgroupPath);
    if (fs.existsSync(pinDir)) {
      // This build's generation was retired (detached, draining) by a newer one:
      // keep it draining under another name and load afresh.
      fs.renameSync(pinDir, `${pinDir}-retired-${Date.now()}`);
    }
    return Datapath.load(n, objectPath, generation, pinDir, cgroupPath, opts.capacity ?? {});
  }

  /**
   * Opens a pinned generation as it is, attached or retired; never loads.
   * For status, uninstall and draining old generations.
   */
  static openPinned(pinDir: string, cgroupPath: string): Datapath {
    const name = path.basename(pinDir);
    return Datapath.adopt(native(), name.replace(/^gen-/, ''), pinDir, cgroupPath, { allowDetached: true });
  }

  private static checkLayouts(n: NativeAddon, objectPath: string): void {
    const problems = Object.keys(EXPECTED_LAYOUTS).flatMap((name) => layoutMismatches(name, n.structLayout(objectPath, name)));
    if (problems.length) {
      throw new DatapathError(`BPF object and TypeScript codecs disagree (bpf/accel_maps.h vs src/datapath/layout.ts):\n  ${problems.join('\n  ')}`);
    }
  }

  private static load(n: NativeAddon, objectPath: string, generation: string, pinDir: string, cgroupPath: string, capacity: MapCapacity): Datapath {
    Datapath.checkLayouts(n, objectPath);
    const sockHash = capacity.sockHash ?? DEFAULT_SOCK_HASH_ENTRIES;
    if (!Number.isInteger(sockHash) || sockHash < 1 || sockHash > MAX_MAP_ENTRIES) throw new DatapathError(`capacity.sockHash: ${sockHash} is not a whole number of entries from 1 to ${MAX_MAP_ENTRIES}`);
    let loaded;
    try {
      // peer_info (one entry per registered socket, kernel only: never pinned
      // nor read here, it holds kernel addresses) gets room to spare.
      loaded = n.loadObject(objectPath, { sock_hash: sockHash, peer_info: Math.min(2 * sockHash, MAX_MAP_ENTRIES) });
    } catch (e) {
      throw new DatapathError(loadRefusal((e as Error).message), { cause: e });
    }
    const fds = [...Object.values(loaded.maps), ...Object.values(loaded.progs)];
    const pinned: string[] = [];
    let link = -1;
    let ingressLink = -1;
    let msgAttached = false;
    try {
      const maps = {} as Record<MapName, number>;
      for (const name of MAP_NAMES) {
        const fd = loaded.maps[name];
        if (fd === undefined) throw new DatapathError(`BPF object has no map ${name}`);
        maps[name] = fd;
      }
      const sockops = loaded.progs[PROG_SOCKOPS];
      const msg = loaded.progs[PROG_MSG];
      const ingress = loaded.progs[PROG_INGRESS];
      if (sockops === undefined || msg === undefined || ingress === undefined) throw new DatapathError('BPF object lacks its programs');
      // Settings before attach: a program that runs sees a complete config.
      n.mapUpdate(maps.accel_cfg, encodeU32(0), encodeConfig({ crossPod: false, keepaliveIdleSeconds: 0 }), BPF_ANY);
      n.progAttach(msg, maps.sock_hash, 'sk_msg_verdict');
      msgAttached = true;
      // The gate before the sockops link: no socket registers without it.
      ingressLink = n.linkCgroup(ingress, cgroupPath, 'cgroup_inet_ingress');
      link = n.linkCgroup(sockops, cgroupPath, 'cgroup_sock_ops');
      fs.mkdirSync(pinDir, { recursive: true, mode: 0o700 });
      const pin = (fd: number, name: string) => {
        const p = path.join(pinDir, name);
        n.objPin(fd, p);
        pinned.push(p);
      };
      for (const name of MAP_NAMES) pin(maps[name], `map_${name}`);
      pin(sockops, `prog_${PROG_SOCKOPS}`);
      pin(msg, `prog_${PROG_MSG}`);
      pin(ingress, `prog_${PROG_INGRESS}`);
      pin(ingressLink, INGRESS_LINK_PIN);
      pin(link, LINK_PIN); // last: its presence marks a complete generation
      for (const fd of Object.values(loaded.progs)) if (fd !== sockops && fd !== msg && fd !== ingress) n.closeFd(fd);
      // The programs keep their other maps (peer_info, .rodata ...) alive.
      for (const [name, fd] of Object.entries(loaded.maps)) if (!(MAP_NAMES as readonly string[]).includes(name)) n.closeFd(fd);
      return new Datapath(generation, pinDir, cgroupPath, false, maps, { sockops, msg, ingress }, link, ingressLink);
    } catch (e) {
      // Never partial: undo what this call did.
      for (const l of [link, ingressLink]) if (l >= 0) { try { n.linkDetach(l); } catch { /* already gone */ } n.closeFd(l); }
      if (msgAttached && loaded.maps.sock_hash !== undefined && loaded.progs[PROG_MSG] !== undefined) {
        try { n.progDetach(loaded.progs[PROG_MSG], loaded.maps.sock_hash, 'sk_msg_verdict'); } catch { /* gone */ }
      }
      for (const p of pinned) fs.rmSync(p, { force: true });
      try { fs.rmdirSync(pinDir); } catch { /* not created or not empty */ }
      for (const fd of fds) n.closeFd(fd);
      if (e instanceof DatapathError) throw e;
      throw new DatapathError(`attaching the datapath to ${cgroupPath} failed: ${(e as Error).message}`, { cause: e });
    }
  }

  private static adopt(n: NativeAddon, generation: string, pinDir: string, cgroupPath: string,
    opts: { allowDetached?: boolean } = {}): Datapath {
    const opened: number[] = [];
    const get = (name: string) => {
      const fd = n.objGet(path.join(pinDir, name));
      opened.push(fd);
      return fd;
    };
    try {
      const maps = {} as Record<MapName, number>;
      for (const name of MAP_NAMES) {
        maps[name] = OPTIONAL_MAPS.has(name) && !fs.existsSync(path.join(pinDir, `map_${name}`)) ? -1 : get(`map_${name}`);
      }
      const sockops = get(`prog_${PROG_SOCKOPS}`);
      const msg = get(`prog_${PROG_MSG}`);
      const ingress = get(`prog_${PROG_INGRESS}`);
      const ingressLink = fs.existsSync(path.join(pinDir, INGRESS_LINK_PIN)) ? get(INGRESS_LINK_PIN) : -1;
      const linked = fs.existsSync(path.join(pinDir, LINK_PIN));
      if (!linked && !opts.allowDetached) throw new DatapathError(`${pinDir} has no sockops link pinned`);
      const link = linked ? get(LINK_PIN) : -1;
      if (link >= 0) {
        const li = n.linkInfo(link);
        const want = cgroupId(cgroupPath);
        if (li.cgroupId !== undefined && li.cgroupId !== want) {
          throw new DatapathError(`pinned generation ${pinDir} is linked to cgroup id ${li.cgroupId}, not ${cgroupPath} (id ${want})`);
        }
      }
      const dp = new Datapath(generation, pinDir, cgroupPath, true, maps, { sockops, msg, ingress }, link, ingressLink);
      // An sk_msg program stays on the pinned sockhash; re-attach if someone took it off.
      if (link >= 0 && !dp.attachment().skMsgAttached) n.progAttach(msg, maps.sock_hash, 'sk_msg_verdict');
      return dp;
    } catch (e) {
      for (const fd of opened) n.closeFd(fd);
      if (e instanceof DatapathError) throw e;
      throw new DatapathError(`adopting pinned datapath ${pinDir} failed: ${(e as Error).message}`, { cause: e });
    }
  }

  private live(): void {
    if (this.closed) throw new DatapathError('datapath is closed');
  }

  /**
   * Pairs new connections of this netns from now on (updates in place when
   * enabled). `crossPod` (default true): it may also pair with another pod's
   * netns, when cross-pod pairing is on and that netns may too.
   * `outboundDirect` / `inboundDirect` (default false): its sidecar captures
   * none of that direction, so with `addressesKnown` an application's socket
   * to (from) no pod of this node is never registered.
   */
  enable(netnsCookie: bigint, opts: Omit<Partial<NetnsPolicy>, 'enabled'> = {}): void {
    this.live();
    this.readable('policy');
    const key = encodeU64(netnsCookie);
    const zero = Buffer.alloc(this.n.mapInfo(this.maps.netns_counters).lookupSize);
    try {
      this.n.mapUpdate(this.maps.netns_counters, key, zero, BPF_NOEXIST);
    } catch (e) {
      if (!(isNativeError(e) && e.code === 'EEXIST')) throw e;
    }
    this.n.mapUpdate(this.maps.netns_policy, key, encodeNetnsPolicy({
      enabled: true, excludePorts: opts.excludePorts ?? [], crossPod: opts.crossPod ?? true, addressesKnown: opts.addressesKnown ?? false,
      outboundDirect: opts.outboundDirect ?? false, inboundDirect: opts.inboundDirect ?? false,
    }), BPF_ANY);
  }

  /**
   * No new pairing in this netns, and each paired socket's next send goes to
   * TCP for good (order-safe: its redirected bytes are read first). Nothing is
   * deleted from the sockhash: that would free unread redirected bytes.
   * Returns false when the netns was not enabled.
   */
  disable(netnsCookie: bigint, opts: { keepCounters?: boolean } = {}): boolean {
    this.live();
    const key = encodeU64(netnsCookie);
    const was = this.n.mapDelete(this.maps.netns_policy, key);
    if (!opts.keepCounters) this.n.mapDelete(this.maps.netns_counters, key);
    return was;
  }

  /** A map's keys, one bpf_map_get_next_key per key. */
  private *keysOf(fd: number): Generator<Buffer> {
    for (let k = this.n.mapNextKey(fd, null); k; k = this.n.mapNextKey(fd, k)) yield k;
  }

  /** Cookies of the enabled netns; keys only, so any generation's can be listed (and disabled). */
  enabledNetnsCookies(): bigint[] {
    this.live();
    const out: bigint[] = [];
    for (const k of this.keysOf(this.maps.netns_policy)) out.push(k.readBigUInt64LE(0));
    return out;
  }

  enabledNetns(): Map<bigint, NetnsPolicy> {
    this.live();
    this.readable('policy');
    const out = new Map<bigint, NetnsPolicy>();
    for (const k of this.keysOf(this.maps.netns_policy)) {
      const v = this.n.mapLookup(this.maps.netns_policy, k);
      if (v) out.set(k.readBigUInt64LE(0), decodeNetnsPolicy(v));
    }
    return out;
  }

  setConfig(cfg: NodeConfig): void {
    this.live();
    this.readable('config');
    this.n.mapUpdate(this.maps.accel_cfg, encodeU32(0), encodeConfig(cfg), BPF_ANY);
  }

  config(): Required<NodeConfig> {
    this.live();
    this.readable('config');
    const v = this.n.mapLookup(this.maps.accel_cfg, encodeU32(0));
    if (!v) throw new DatapathError('config map has no entry 0');
    return decodeConfig(v);
  }

  private countersReadable(): void {
    const why = this.layoutOf.countersUnreadable;
    if (why) throw new GenerationLayoutError(`generation ${this.generation}'s counters cannot be read by this build: ${why}`);
  }

  /**
   * Node-wide counters since the generation was loaded (they live in the
   * pinned maps), read by each counter's slot in this generation's own enum;
   * counters it does not have read 0 (see `layout`).
   */
  counters(): Counters {
    this.live();
    this.countersReadable();
    const out = zeroCounters();
    for (const [name, i] of this.layoutOf.counterAt) {
      const v = this.n.mapLookup(this.maps.counters, encodeU32(i));
      if (v) out[name] += sumPerCpuU64(v, this.cpus);
    }
    return out;
  }

  /** Counters of one enabled netns, or null when it has none. */
  netnsCounters(netnsCookie: bigint): Counters | null {
    this.live();
    this.countersReadable();
    const v = this.n.mapLookup(this.maps.netns_counters, encodeU64(netnsCookie));
    if (!v) return null;
    const out = zeroCounters();
    addPerCpuCountersAt(out, v, this.cpus, this.layoutOf.counterSlot, this.layoutOf.counterAt);
    return out;
  }

  /** What the kernel says is attached, by program id (not by our bookkeeping). */
  attachment(): Attachment {
    this.live();
    const sockopsId = this.n.progInfo(this.progs.sockops).id;
    const msgId = this.n.progInfo(this.progs.msg).id;
    const ingressId = this.n.progInfo(this.progs.ingress).id;
    const cg = this.n.openPath(this.cgroupPath);
    let cgIds: number[];
    let ingressIds: number[];
    try {
      cgIds = this.n.progQuery(cg, 'cgroup_sock_ops');
      ingressIds = this.n.progQuery(cg, 'cgroup_inet_ingress');
    } finally {
      this.n.closeFd(cg);
    }
    const msgIds = this.n.progQuery(this.maps.sock_hash, 'sk_msg_verdict');
    return {
      cgroupPath: this.cgroupPath,
      sockopsLinked: cgIds.includes(sockopsId),
      skMsgAttached: msgIds.includes(msgId),
      ingressLinked: ingressIds.includes(ingressId),
      cgroupSockopsProgIds: cgIds,
      cgroupIngressProgIds: ingressIds,
      ourProgIds: { sockops: sockopsId, msg: msgId, ingress: ingressId },
    };
  }

  /** True while this generation's sockops program is linked (new sockets register here). */
  get linked(): boolean {
    return this.link >= 0;
  }

  /**
   * Stops registering new sockets here (an upgrade's new generation takes
   * over); sockets already paired keep these programs and maps until they close.
   */
  retire(): void {
    this.live();
    if (this.link < 0) return;
    try { this.n.linkDetach(this.link); } catch (e) { if (!(isNativeError(e) && e.code === 'ENOLINK')) throw e; }
    this.n.closeFd(this.link);
    this.link = -1;
    fs.rmSync(path.join(this.pinDir, LINK_PIN), { force: true });
  }

  /** Sockets still in this generation's sockhash (live registered connections). */
  socketCount(): number {
    this.live();
    return this.n.mapKeyCount(this.maps.sock_hash);
  }

  /** This generation's map sizes, as its maps were created (an adopted generation keeps its own). */
  capacity(): Required<MapCapacity> {
    this.live();
    return { sockHash: this.n.mapInfo(this.maps.sock_hash).maxEntries };
  }

  /**
   * Entries of each map that bounds pairing, of its size. The kernel keeps no
   * count a reader without a program can get, so entries are counted by
   * walking the keys (one syscall per entry, see README: Metrics).
   */
  mapFill(): MapFill[] {
    this.live();
    const maps = (['sock_hash', 'pod_addrs'] as const).filter((m) => this.maps[m] >= 0);
    return maps.map((map) => ({ map, entries: this.n.mapKeyCount(this.maps[map]), maxEntries: this.n.mapInfo(this.maps[map]).maxEntries }));
  }

  /** The node's pod addresses the programs know (address -> its pod's netns cookie). */
  podAddresses(): Map<string, bigint> {
    this.live();
    const out = new Map<string, bigint>();
    if (this.maps.pod_addrs < 0) return out;
    for (const k of this.keysOf(this.maps.pod_addrs)) {
      const v = this.n.mapLookup(this.maps.pod_addrs, k);
      if (v) out.set(decodePodAddress(k), v.readBigUInt64LE(0));
    }
    return out;
  }

  /**
   * Makes the known pod addresses exactly `want` (address -> its pod's netns
   * cookie). Only a known pod address gives a node-wide key, so pods can pair
   * across netns; any other client address is scoped to its netns (I1).
   * Throws RangeError naming an address that is not one.
   */
  setPodAddresses(want: ReadonlyMap<string, bigint>, opts: { prune?: boolean } = {}): void {
    this.live();
    if (this.maps.pod_addrs < 0) throw new GenerationLayoutError(`generation ${this.generation} has no pod_addrs map (built before pod addresses scoped keys)`);
    const wanted = new Map<string, { key: Buffer; cookie: bigint }>();
    for (const [ip, cookie] of want) {
      const key = encodePodAddress(ip);
      wanted.set(key.toString('hex'), { key, cookie });
    }
    const stale: Buffer[] = [];
    for (const k of this.keysOf(this.maps.pod_addrs)) {
      if (!wanted.has(k.toString('hex'))) stale.push(k);
    }
    if (opts.prune ?? true) for (const k of stale) this.n.mapDelete(this.maps.pod_addrs, k);
    for (const { key, cookie } of wanted.values()) {
      const v = this.n.mapLookup(this.maps.pod_addrs, key);
      if (!v || v.readBigUInt64LE(0) !== cookie) this.n.mapUpdate(this.maps.pod_addrs, key, encodeU64(cookie), BPF_ANY);
    }
  }

  /**
   * Links the connection iterator (bpf/conns_iter.bpf.c) to this generation's
   * per-socket state: the link's fd, for iterRead; the caller closes it.
   * Refused when this generation's struct sock_state (its map's own BTF)
   * differs from the iterator's (this build's bpf/accel_maps.h).
   */
  connsIterator(objPath: string = connsIterObjectPath): number {
    this.live();
    const btfId = this.n.mapInfo(this.maps.sock_state).btfId;
    if (btfId === 0) throw new GenerationLayoutError(`generation ${this.generation}: its sock_state map carries no BTF, so its per-socket state cannot be read`);
    const theirs = this.n.structLayout(btfId, 'sock_state');
    const ours = this.n.structLayout(objPath, 'sock_state');
    if (JSON.stringify(theirs) !== JSON.stringify(ours)) {
      throw new GenerationLayoutError(`generation ${this.generation} keeps another struct sock_state than ${path.basename(objPath)} reads (${JSON.stringify(theirs)} vs ${JSON.stringify(ours)})`);
    }
    return this.n.iterLink(objPath, 'conns_tcp', { sock_state: this.maps.sock_state });
  }

  /** Closes this process's handles; the pinned datapath keeps working. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const fd of [...Object.values(this.maps), this.progs.sockops, this.progs.msg, this.progs.ingress, this.link, this.ingressLink]) if (fd >= 0) this.n.closeFd(fd);
  }

  /**
   * Detaches and unpins this generation. Sockets already paired keep the
   * programs they were linked with and go on working until they close.
   */
  uninstall(): void {
    this.live();
    this.retire();
    if (this.ingressLink >= 0) {
      try { this.n.linkDetach(this.ingressLink); } catch (e) { if (!(isNativeError(e) && e.code === 'ENOLINK')) throw e; }
      this.n.closeFd(this.ingressLink);
      this.ingressLink = -1;
    }
    try {
      this.n.progDetach(this.progs.msg, this.maps.sock_hash, 'sk_msg_verdict');
    } catch (e) {
      if (!(isNativeError(e) && e.code === 'ENOENT')) throw e;
    }
    this.close();
    fs.rmSync(this.pinDir, { recursive: true, force: true });
  }
}
