// "Is this connection accelerated?": the TCP sockets of enabled pods, as the
// connection iterator read them, paired into connections, each direction
// said redirected or on TCP and why. Pure: the kernel reading is in kernel.ts.
//
// What the datapath records per socket (struct sock_state, bpf/accel_maps.h)
// is a key, flags and the write sequence at ESTABLISHED (moved up each time
// the direction came back from TCP to redirect, I2). So:
// - a direction is on TCP iff its sender's write_seq moved past that base
//   (I2: the kernel's own sequence space), or it was never registered;
// - why a never-registered socket stays on TCP is recorded (its flags);
// - why a registered direction left the redirect is NOT recorded per socket
//   (only counted per pod): it is inferred where the state shows it (netns
//   disabled, other end in another pod with cross-pod pairing off, no other
//   end, an I8 option or a ULP set now on the end that matters, as the
//   iterator reads them), and otherwise said to be unrecorded;
// - redirected bytes are counted per pod, not per connection.
import { ROLE_CLIENT, ROLE_SERVER, type NetnsPolicy } from '../datapath/layout.js';
import { READER_OPTIONS, SOCK_FLAGS, TCP_STATE_NAMES, WRITER_OPTIONS, optionNames, type ConnRecord } from './records.js';

/** One socket as read in one netns. */
export interface EndInput {
  netnsCookie: bigint;
  /** "namespace/name" of the pod owning that netns, when known. */
  pod: string | null;
  /** The generation whose state the socket carries, if any. */
  generation: string | null;
  record: ConnRecord;
}

export interface ConnsContext {
  /** Enabled netns now (the generation's policies). */
  policies: Map<bigint, NetnsPolicy>;
  config: { crossPod: boolean; sidecarOnly: boolean; proxyUid: number };
}

export type Mode = 'redirected' | 'tcp' | 'idle';

export type Reason =
  | 'ulp' | 'repair' | 'excluded-port' | 'sidecar-only' | 'not-seen'
  | 'blocking' | 'unknown-reader' | 'turned-blocking' | 'key-conflict' | 'early-data'
  | 'disabled' | 'cross-pod' | 'no-peer' | 'socket-option' | 'unrecorded';

/** The direction an end sends in. */
export interface Direction {
  mode: Mode;
  /** Why it is on TCP (mode 'tcp'); null otherwise. */
  reason: Reason | null;
  /**
   * 'recorded': the socket's own state says so; 'inferred': read from the
   * state around it (the datapath does not record it per socket);
   * null when mode is not 'tcp'.
   */
  basis: 'recorded' | 'inferred' | null;
  detail: string;
  /**
   * Bytes this end queued for TCP since it registered, or since its last
   * return from TCP to redirect (write_seq - base; the name predates that);
   * null when it never registered.
   */
  tcpBytesSinceRegistered: number | null;
}

export interface ConnEnd {
  pod: string | null;
  netnsCookie: string;
  local: string;
  remote: string;
  tcpState: string;
  /** The socket cookie (ss -e prints it in hex as sk:). */
  sockCookie: string;
  uid: number;
  role: 'client' | 'server' | null;
  generation: string | null;
  /** In a sockhash now (the kernel's psock). */
  inSockhash: boolean;
  bytesAcked: bigint;
  bytesReceived: bigint;
  sends: Direction;
}

export interface Connection {
  /** Client first when known. One end when the other is not among the listed sockets (another node, a pod not enabled). */
  ends: ConnEnd[];
  /** How the two ends were matched: the datapath's key (exact), their addresses, or not at all. */
  pairedBy: 'key' | 'addresses' | null;
}

export const BYTES_NOTE = 'redirected bytes are counted per pod (redirectedBytes below), not per connection: the datapath keeps no per-socket byte count';

const endpoint = (ip: string, port: number) => (ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`);

function keyEmpty(r: ConnRecord): boolean {
  const k = r.state!.key;
  return k.clientPort === 0 && k.clientSeq === 0 && k.serverSeq === 0 && k.scope === 0n && /^(0\.0\.0\.0|::)$/.test(k.clientIp);
}

function hasKey(e: EndInput): boolean {
  return e.record.state !== null && !keyEmpty(e.record) && (e.record.state.key.role === ROLE_CLIENT || e.record.state.key.role === ROLE_SERVER);
}

function keyText(e: EndInput): string {
  const k = e.record.state!.key;
  return `${k.scope}|${k.clientIp}|${k.clientPort}|${k.clientSeq}|${k.serverSeq}`;
}

/** Pairs the ends: by the datapath's key when both carry one, else by addresses when that is unambiguous. */
export function pairEnds(ends: EndInput[]): { ends: EndInput[]; pairedBy: Connection['pairedBy'] }[] {
  const out: { ends: EndInput[]; pairedBy: Connection['pairedBy'] }[] = [];
  const used = new Set<EndInput>();
  const byKey = new Map<string, EndInput[]>();
  for (const e of ends) if (hasKey(e)) byKey.set(keyText(e), [...(byKey.get(keyText(e)) ?? []), e]);
  for (const group of byKey.values()) {
    const c = group.filter((e) => e.record.state!.key.role === ROLE_CLIENT);
    const s = group.filter((e) => e.record.state!.key.role === ROLE_SERVER);
    if (c.length === 1 && s.length === 1) {
      out.push({ ends: [c[0]!, s[0]!], pairedBy: 'key' });
      used.add(c[0]!);
      used.add(s[0]!);
    }
  }
  // Without keys: X's local address is Y's remote one, and either Y's local is
  // X's remote (no NAT between them) or both are in one netns (Istio's
  // REDIRECT rewrites the destination only: X is then the client).
  const rest = ends.filter((e) => !used.has(e));
  const local = (e: EndInput) => `${e.record.localIp}|${e.record.localPort}`;
  const remote = (e: EndInput) => `${e.record.remoteIp}|${e.record.remotePort}`;
  const matches = (x: EndInput, y: EndInput) => x !== y && remote(y) === local(x)
    && (local(y) === remote(x) || y.netnsCookie === x.netnsCookie);
  for (const x of rest) {
    if (used.has(x)) continue;
    const ys = rest.filter((y) => !used.has(y) && matches(x, y));
    if (ys.length !== 1) continue;
    const y = ys[0]!;
    // Unambiguous both ways: nothing else claims x either.
    if (rest.some((z) => !used.has(z) && z !== x && matches(z, y))) continue;
    used.add(x);
    used.add(y);
    const yIsClient = y.record.state?.key.role === ROLE_CLIENT || (x.record.state?.key.role === ROLE_SERVER);
    out.push({ ends: yIsClient ? [y, x] : [x, y], pairedBy: 'addresses' });
  }
  for (const e of ends) if (!used.has(e)) out.push({ ends: [e], pairedBy: null });
  return out;
}

function crossPodAllowed(ctx: ConnsContext, a: bigint, b: bigint): boolean {
  return ctx.config.crossPod && !!ctx.policies.get(a)?.crossPod && !!ctx.policies.get(b)?.crossPod;
}

const tcp = (reason: Reason, basis: 'recorded' | 'inferred', detail: string, tcpBytes: number | null = null): Direction =>
  ({ mode: 'tcp', reason, basis, detail, tcpBytesSinceRegistered: tcpBytes });

/** Why a registered end's direction (or a released one) left the redirect, as far as the state around it shows. */
function inferredFallback(e: EndInput, other: EndInput | undefined, ctx: ConnsContext, tcpBytes: number, what: string): Direction {
  if (!ctx.policies.get(e.netnsCookie)?.enabled) return tcp('disabled', 'inferred', `${what}; its netns is not enabled now`, tcpBytes);
  if (other && other.netnsCookie !== e.netnsCookie && !crossPodAllowed(ctx, e.netnsCookie, other.netnsCookie)) {
    return tcp('cross-pod', 'inferred', `${what}; the other end is in another pod${other.pod ? ` (${other.pod})` : ''} and cross-pod pairing is off for them`, tcpBytes);
  }
  const otherRegistered = other?.record.state && (other.record.state.flags & SOCK_FLAGS.REGISTERED) !== 0;
  if (!other || !otherRegistered) {
    return tcp('no-peer', 'inferred', `${what}; ${other ? 'the other end was never registered (see its own reason)' : 'the other end is not a socket of an enabled pod on this node'}`, tcpBytes);
  }
  // What holds now and keeps the direction on TCP while it does (I8, I4); it may not be what moved it there.
  const writer = optionNames(e.record.writerOptions, WRITER_OPTIONS);
  if (writer.length) return tcp('socket-option', 'inferred', `${what}; this end has ${writer.join(', ')} set, which keeps its sends on TCP while set (I8)`, tcpBytes);
  const reader = optionNames(other.record.readerOptions, READER_OPTIONS);
  if (reader.length) return tcp('socket-option', 'inferred', `${what}; the other end has ${reader.join(', ')} set, which keeps what it reads on TCP while set (I8)`, tcpBytes);
  if (e.record.ulp) return tcp('ulp', 'inferred', `${what}; a ULP (kTLS) was set on this end since it registered: it sends over TCP (I4)`, tcpBytes);
  if (other.record.ulp) return tcp('ulp', 'inferred', `${what}; the other end has a ULP (kTLS) set: nothing is redirected to it (I4)`, tcpBytes);
  const paired = (e.record.state!.flags & SOCK_FLAGS.PAIRED) !== 0;
  return tcp('unrecorded', 'inferred', `${what} ${paired ? 'after redirecting' : 'at its first send'}; why is not recorded per socket (backpressure, TCP memory pressure, its netns disabled for a while, a socket option only TCP honours (I8) set then and dropped since, or the other end not yet registered)`, tcpBytes);
}

/** The state of the direction `e` sends in. */
export function directionOf(e: EndInput, other: EndInput | undefined, ctx: ConnsContext): Direction {
  const r = e.record;
  const st = r.state;
  if (!st) {
    if (r.ulp) return tcp('ulp', 'recorded', 'a ULP (kTLS) is set on the socket: left to TCP (I4)');
    if (r.repair) return tcp('repair', 'recorded', 'a TCP_REPAIR socket: left to TCP (I4)');
    const excluded = ctx.policies.get(e.netnsCookie)?.excludePorts ?? [];
    if (excluded.includes(r.localPort) || excluded.includes(r.remotePort)) {
      return tcp('excluded-port', 'inferred', `no datapath state; port ${excluded.includes(r.localPort) ? r.localPort : r.remotePort} is excluded for its pod`);
    }
    if (ctx.config.sidecarOnly && r.uid !== ctx.config.proxyUid) return tcp('sidecar-only', 'inferred', 'no datapath state; this kernel runs in sidecar-only mode and this is an application\'s socket');
    return tcp('not-seen', 'inferred', 'no datapath state: established before its pod was enabled (or before the running generation was loaded)');
  }
  const f = st.flags;
  const registered = (f & SOCK_FLAGS.REGISTERED) !== 0;
  const tcpBytes = registered || !keyEmpty(r) ? (r.writeSeq - st.baseWriteSeq) >>> 0 : null;
  if (f & SOCK_FLAGS.TURNED_BLOCKING) return tcp('turned-blocking', 'recorded', `its application made it blocking${registered ? ': withdrawn at its next TCP segment (I6)' : ': withdrawn to plain TCP (I6)'}`, tcpBytes);
  if (!registered) {
    if (f & SOCK_FLAGS.LEARN) return tcp('unknown-reader', 'recorded', 'accepted on a listener not yet seen read event-driven: never registered (I6)');
    if (keyEmpty(r)) return tcp('blocking', 'recorded', 'its reader was blocking when it was established: never registered (I6)');
    if (f === 0) return tcp('key-conflict', 'recorded', 'another socket held its key: never registered (I1)', tcpBytes);
    return inferredFallback(e, other, ctx, tcpBytes ?? 0, 'registered, sent over TCP, and released to plain TCP as unpairable');
  }
  if (!(f & SOCK_FLAGS.TX_CLEAN)) return tcp('early-data', 'recorded', 'bytes went over TCP before ESTABLISHED (TCP Fast Open): this direction stays TCP (I2)', tcpBytes);
  if (tcpBytes !== 0) return inferredFallback(e, other, ctx, tcpBytes ?? 0, 'this direction went to TCP');
  if (f & SOCK_FLAGS.PAIRED) return { mode: 'redirected', reason: null, basis: null, detail: 'every byte sent so far was redirected to the other end', tcpBytesSinceRegistered: 0 };
  return { mode: 'idle', reason: null, basis: null, detail: 'registered, nothing sent yet: its first send is redirected if the other end can take it', tcpBytesSinceRegistered: 0 };
}

function endOf(e: EndInput, other: EndInput | undefined, ctx: ConnsContext): ConnEnd {
  const r = e.record;
  const role = r.state?.key.role === ROLE_CLIENT ? 'client' : r.state?.key.role === ROLE_SERVER ? 'server' : null;
  return {
    pod: e.pod, netnsCookie: e.netnsCookie.toString(), local: endpoint(r.localIp, r.localPort), remote: endpoint(r.remoteIp, r.remotePort),
    tcpState: TCP_STATE_NAMES[r.tcpState] ?? String(r.tcpState), sockCookie: r.sockCookie.toString(), uid: r.uid, role,
    generation: e.generation, inSockhash: r.inSockmap, bytesAcked: r.bytesAcked, bytesReceived: r.bytesReceived,
    sends: directionOf(e, other, ctx),
  };
}

/** Connections from the ends read in every enabled netns. */
export function buildConnections(ends: EndInput[], ctx: ConnsContext): Connection[] {
  return pairEnds(ends).map(({ ends: es, pairedBy }) => {
    const [a, b] = es;
    if (a === undefined) throw new Error('a connection without ends');
    const out = b === undefined ? [endOf(a, undefined, ctx)] : [endOf(a, b, ctx), endOf(b, a, ctx)];
    // The client end first when either says which it is.
    if (out.length === 2 && (out[1]!.role === 'client' || out[0]!.role === 'server')) out.reverse();
    return { ends: out, pairedBy };
  });
}

/** The connections with an end in `pod` ("namespace/name"). */
export function connectionsOfPod(conns: Connection[], pod: string): Connection[] {
  return conns.filter((c) => c.ends.some((e) => e.pod === pod));
}

const who = (e: ConnEnd) => `${e.pod ?? `netns ${e.netnsCookie}`}, uid ${e.uid}${e.role ? `, ${e.role}` : ''}`;

function directionText(d: Direction): string {
  if (d.mode !== 'tcp') return `${d.mode} (${d.detail})`;
  return `TCP: ${d.reason}${d.basis === 'inferred' ? ' (inferred)' : ''}: ${d.detail}${d.tcpBytesSinceRegistered ? `; ${d.tcpBytesSinceRegistered} bytes over TCP since registered` : ''}`;
}

export interface PodBytes { pod: string | null; netnsCookie: string; redirectedBytes: bigint | null }

export function connsText(conns: Connection[], pods: PodBytes[], problems: string[]): string {
  const out: string[] = [];
  if (conns.length === 0) out.push('no TCP connections in the enabled pods');
  for (const c of conns) {
    const [a, b] = c.ends;
    out.push(`${a!.local} -> ${a!.remote} (${who(a!)}) ${a!.tcpState}${b ? `  <=>  ${b.local} <- ${b.remote} (${who(b)}) ${b.tcpState}` : '  <=>  other end not on this node or not in an enabled pod'}`);
    out.push(`  ${b ? 'client -> server' : 'sends'}: ${directionText(a!.sends)}`);
    if (b) out.push(`  server -> client: ${directionText(b.sends)}`);
  }
  out.push('');
  out.push(`note: ${BYTES_NOTE}`);
  for (const p of pods) out.push(`  ${p.pod ?? `netns ${p.netnsCookie}`}: ${p.redirectedBytes === null ? 'counters unreadable' : `${p.redirectedBytes} bytes redirected`}`);
  for (const p of problems) out.push(`warning: ${p}`);
  return out.join('\n') + '\n';
}
