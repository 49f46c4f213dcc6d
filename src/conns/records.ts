// The records of the connection iterator (struct conn_record in
// bpf/conns_iter.bpf.c), decoded. The layout below is checked against that
// object's BTF before any record is read (checkRecordLayout).
import type { StructLayout } from '../datapath/native.js';

/**
 * The datapath's per-socket flag bits (SOCK_* in bpf/accel_maps.h, macros:
 * not in BTF, so test/unit/conns.test.ts reads them from the header).
 */
export const SOCK_FLAGS = {
  REGISTERED: 1,
  TX_CLEAN: 4,
  PAIRED: 8,
  APP: 16,
  LEARN: 32,
  TURNED_BLOCKING: 64,
  SEEN_NONBLOCKING: 128,
  CLAIMS_PEER: 256,
  LEAVE_PENDING: 512,
} as const;

/**
 * The I8 options the iterator reports (READER_OPT_* and WRITER_OPT_* in
 * bpf/sock_options.h, macros: test/unit/conns.test.ts reads them from the
 * header), by the name an application sets them with.
 */
export const READER_OPTIONS: Record<number, string> = {
  1: 'SO_RCVLOWAT above 1', 2: 'SO_PEEK_OFF', 4: 'TCP_INQ', 8: 'receive timestamps (SO_TIMESTAMP*, SO_TIMESTAMPING)',
};
export const WRITER_OPTIONS: Record<number, string> = {
  1: 'SO_ZEROCOPY', 2: 'transmit timestamps (SO_TIMESTAMPING)',
};

/** The names of the bits set in `bits`, from one of the tables above. */
export function optionNames(bits: number, table: Record<number, string>): string[] {
  return Object.entries(table).filter(([bit]) => (bits & Number(bit)) !== 0).map(([, name]) => name);
}

export const RECORD_LAYOUT: StructLayout = {
  size: 136,
  members: [
    { name: 'sock_cookie', offset: 0, size: 8 },
    { name: 'bytes_acked', offset: 8, size: 8 },
    { name: 'bytes_received', offset: 16, size: 8 },
    { name: 'local_ip', offset: 24, size: 16 },
    { name: 'remote_ip', offset: 40, size: 16 },
    { name: 'local_port', offset: 56, size: 2 },
    { name: 'remote_port', offset: 58, size: 2 },
    { name: 'family', offset: 60, size: 1 },
    { name: 'tcp_state', offset: 61, size: 1 },
    { name: 'has_state', offset: 62, size: 1 },
    { name: 'in_sockmap', offset: 63, size: 1 },
    { name: 'uid', offset: 64, size: 4 },
    { name: 'write_seq', offset: 68, size: 4 },
    { name: 'ulp', offset: 72, size: 1 },
    { name: 'repair', offset: 73, size: 1 },
    { name: 'reader_options', offset: 74, size: 1 },
    { name: 'writer_options', offset: 75, size: 1 },
    { name: 'pad1', offset: 76, size: 4 },
    { name: 'state', offset: 80, size: 56 },
  ],
};

/** Where the decoder and the object disagree (empty: none). */
export function recordLayoutProblems(btf: StructLayout): string[] {
  const out: string[] = [];
  if (btf.size !== RECORD_LAYOUT.size) out.push(`struct conn_record is ${btf.size} bytes, the decoder reads ${RECORD_LAYOUT.size}`);
  const theirs = new Map(btf.members.map((m) => [m.name, m]));
  for (const m of RECORD_LAYOUT.members) {
    const t = theirs.get(m.name);
    if (!t) out.push(`conn_record.${m.name}: not in the object`);
    else if (t.offset !== m.offset || t.size !== m.size) out.push(`conn_record.${m.name}: at ${t.offset} (${t.size} bytes), the decoder reads ${m.offset} (${m.size})`);
  }
  for (const name of theirs.keys()) if (!RECORD_LAYOUT.members.some((m) => m.name === name)) out.push(`conn_record.${name}: unknown to the decoder`);
  return out;
}

/** The datapath's identity of one end (struct accel_conn_key). */
export interface ConnKey {
  scope: bigint;
  clientIp: string;
  clientPort: number;
  clientSeq: number;
  serverSeq: number;
  role: number;
}

export interface SockState {
  key: ConnKey;
  netnsCookie: bigint;
  baseWriteSeq: number;
  flags: number;
}

export interface ConnRecord {
  sockCookie: bigint;
  bytesAcked: bigint;
  bytesReceived: bigint;
  localIp: string;
  remoteIp: string;
  localPort: number;
  remotePort: number;
  family: 4 | 6;
  tcpState: number;
  uid: number;
  writeSeq: number;
  ulp: boolean;
  repair: boolean;
  /** READER_OPT_* bits: options set on this socket that keep the direction into it on TCP (I8). */
  readerOptions: number;
  /** WRITER_OPT_* bits: options set on this socket that keep its own direction on TCP (I8). */
  writerOptions: number;
  inSockmap: boolean;
  /** Null when the datapath stored nothing for this socket. */
  state: SockState | null;
}

/** TCP states (include/net/tcp_states.h) by the names ss prints. */
export const TCP_STATE_NAMES: Record<number, string> = {
  1: 'ESTAB', 2: 'SYN-SENT', 3: 'SYN-RECV', 4: 'FIN-WAIT-1', 5: 'FIN-WAIT-2', 6: 'TIME-WAIT',
  7: 'UNCONN', 8: 'CLOSE-WAIT', 9: 'LAST-ACK', 10: 'LISTEN', 11: 'CLOSING', 12: 'NEW-SYN-RECV',
};

/** What `ss -t` lists without a state filter: connected sockets, not listening, closed, TIME-WAIT or SYN-RECV ones. */
export function isConnected(tcpState: number): boolean {
  return ![3, 6, 7, 10, 12].includes(tcpState);
}

/** An IPv6 address of 16 bytes as text; v4-mapped ones as dotted IPv4. */
export function ipText(b: Buffer): string {
  if (b.length !== 16) throw new RangeError(`an IPv6 address is 16 bytes, got ${b.length}`);
  if (b.readBigUInt64BE(0) === 0n && b.readUInt32BE(8) === 0xffff) return `${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i).toString(16));
  // The longest run of two or more zero groups becomes "::" (RFC 5952).
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== '0') { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen) { best = i; bestLen = j - i; }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

function decodeKey(b: Buffer): ConnKey {
  return {
    scope: b.readBigUInt64LE(0), clientIp: ipText(b.subarray(8, 24)), clientSeq: b.readUInt32LE(24), serverSeq: b.readUInt32LE(28),
    clientPort: b.readUInt16LE(32), role: b[34]!,
  };
}

/** Every record of one read of the iterator. */
export function decodeRecords(buf: Buffer): ConnRecord[] {
  const size = RECORD_LAYOUT.size;
  if (buf.length % size !== 0) throw new RangeError(`iterator output of ${buf.length} bytes is not a whole number of ${size}-byte records`);
  const out: ConnRecord[] = [];
  for (let o = 0; o < buf.length; o += size) {
    const r = buf.subarray(o, o + size);
    const family = r[60] === 2 ? 4 : r[60] === 10 ? 6 : undefined;
    if (family === undefined) throw new RangeError(`record ${o / size}: address family ${r[60]} is neither AF_INET nor AF_INET6`);
    const st = r.subarray(80, 136);
    out.push({
      sockCookie: r.readBigUInt64LE(0), bytesAcked: r.readBigUInt64LE(8), bytesReceived: r.readBigUInt64LE(16),
      localIp: ipText(r.subarray(24, 40)), remoteIp: ipText(r.subarray(40, 56)), localPort: r.readUInt16LE(56), remotePort: r.readUInt16LE(58),
      family, tcpState: r[61]!, uid: r.readUInt32LE(64), writeSeq: r.readUInt32LE(68), ulp: r[72] !== 0, repair: r[73] !== 0,
      readerOptions: r[74]!, writerOptions: r[75]!, inSockmap: r[63] !== 0,
      state: r[62] ? { key: decodeKey(st.subarray(0, 40)), netnsCookie: st.readBigUInt64LE(40), baseWriteSeq: st.readUInt32LE(48), flags: st.readUInt32LE(52) } : null,
    });
  }
  return out;
}
