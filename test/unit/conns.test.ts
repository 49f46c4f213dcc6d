// `conns` without a kernel: the record decoder against the iterator's BTF,
// the flag bits against the datapath's source, and how ends are paired and
// each direction judged, from hand-made records.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { native, connsIterObjectPath } from '../../src/datapath/native.js';
import { ROLE_CLIENT, ROLE_SERVER, type NetnsPolicy } from '../../src/datapath/layout.js';
import { READER_OPTIONS, RECORD_LAYOUT, SOCK_FLAGS, WRITER_OPTIONS, decodeRecords, ipText, recordLayoutProblems, type ConnRecord, type SockState } from '../../src/conns/records.js';
import { buildConnections, connectionsOfPod, connsText, type ConnsContext, type EndInput } from '../../src/conns/connections.js';
import { buildApi, ConnsQueryError } from '../../src/api/server.js';
import { AgentMetrics } from '../../src/api/metrics.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const { REGISTERED, TX_CLEAN, PAIRED, APP, LEARN, TURNED_BLOCKING } = SOCK_FLAGS;

describe('conn_record', () => {
  test('the decoder reads the layout the iterator object was built with', () => {
    assert.deepEqual(recordLayoutProblems(native().structLayout(connsIterObjectPath, 'conn_record')), []);
  });

  test('a layout that moved is named, member by member', () => {
    const moved = { ...RECORD_LAYOUT, members: RECORD_LAYOUT.members.map((m) => (m.name === 'uid' ? { ...m, offset: 60 } : m)) };
    assert.deepEqual(recordLayoutProblems(moved), ['conn_record.uid: at 60 (4 bytes), the decoder reads 64 (4)']);
  });

  test('its sock_state is the datapath\'s, and the flag bits are the datapath\'s SOCK_* values', () => {
    const n = native();
    assert.deepEqual(n.structLayout(connsIterObjectPath, 'sock_state'), n.structLayout(path.join(repo, 'build/bpf/sidecar_accel.bpf.o'), 'sock_state'));
    const src = fs.readFileSync(path.join(repo, 'bpf/accel_maps.h'), 'utf8');
    const defs = Object.fromEntries([...src.matchAll(/^#define SOCK_([A-Z_]+) (\d+)u\b/gm)].map((m) => [m[1]!, Number(m[2])]));
    assert.deepEqual(defs, { ...SOCK_FLAGS });
  });

  test('the option bits are the iterator\'s READER_OPT_* and WRITER_OPT_* values, one name each', () => {
    const src = fs.readFileSync(path.join(repo, 'bpf/sock_options.h'), 'utf8');
    const bits = (prefix: string) => [...src.matchAll(new RegExp(`^#define ${prefix}_OPT_[A-Z_]+ (\\d+)u\\b`, 'gm'))].map((m) => Number(m[1])).sort((a, b) => a - b);
    assert.deepEqual(bits('READER'), Object.keys(READER_OPTIONS).map(Number));
    assert.deepEqual(bits('WRITER'), Object.keys(WRITER_OPTIONS).map(Number));
  });

  test('decodes fields at their offsets, IPv4 as dotted text, IPv6 compressed', () => {
    const b = Buffer.alloc(RECORD_LAYOUT.size * 2);
    b.writeBigUInt64LE(77n, 0);
    b.writeBigUInt64LE(5n, 8);
    b.writeBigUInt64LE(6n, 16);
    Buffer.from('00000000000000000000ffff0a2c0002', 'hex').copy(b, 24);
    Buffer.from('00000000000000000000ffff0a60000a', 'hex').copy(b, 40);
    b.writeUInt16LE(41000, 56);
    b.writeUInt16LE(80, 58);
    b[60] = 2;
    b[61] = 1;
    b[62] = 1;
    b[63] = 1;
    b.writeUInt32LE(1337, 64);
    b.writeUInt32LE(1000, 68);
    b[74] = 4 | 8;
    b[75] = 1;
    b[80 + 34] = ROLE_CLIENT;
    b.writeUInt16LE(41000, 80 + 32);
    b.writeBigUInt64LE(99n, 80 + 40);
    b.writeUInt32LE(900, 80 + 48);
    b.writeUInt32LE(REGISTERED | PAIRED, 80 + 52);
    const second = RECORD_LAYOUT.size;
    Buffer.from('fd440000000000000000000000000002', 'hex').copy(b, second + 24);
    b[second + 60] = 10;
    const [r, v6] = decodeRecords(b);
    assert.deepEqual({ ...r!, state: undefined }, {
      sockCookie: 77n, bytesAcked: 5n, bytesReceived: 6n, localIp: '10.44.0.2', remoteIp: '10.96.0.10', localPort: 41000, remotePort: 80,
      family: 4, tcpState: 1, uid: 1337, writeSeq: 1000, ulp: false, repair: false, readerOptions: 12, writerOptions: 1, inSockmap: true, state: undefined,
    });
    assert.equal(r!.state!.key.role, ROLE_CLIENT);
    assert.equal(r!.state!.key.clientPort, 41000);
    assert.equal(r!.state!.netnsCookie, 99n);
    assert.equal(r!.state!.baseWriteSeq, 900);
    assert.equal(v6!.localIp, 'fd44::2');
    assert.equal(v6!.state, null);
  });

  test('a partial record or an unknown family is refused', () => {
    assert.throws(() => decodeRecords(Buffer.alloc(RECORD_LAYOUT.size + 1)), /not a whole number/);
    assert.throws(() => decodeRecords(Buffer.alloc(RECORD_LAYOUT.size)), /family 0/);
  });

  test('ipText', () => {
    assert.equal(ipText(Buffer.from('00000000000000000000000000000001', 'hex')), '::1');
    assert.equal(ipText(Buffer.from('fd960000000000000000000000000010', 'hex')), 'fd96::10');
    assert.equal(ipText(Buffer.from('20010db8000100000000000100000001', 'hex')), '2001:db8:1::1:0:1');
  });
});

const A = 11n;
const B = 22n;
const ctx = (over: Partial<ConnsContext['config']> = {}, policies?: Map<bigint, NetnsPolicy>): ConnsContext => ({
  policies: policies ?? new Map([[A, { enabled: true, excludePorts: [9999], crossPod: true }], [B, { enabled: true, excludePorts: [], crossPod: true }]]),
  config: { crossPod: false, sidecarOnly: false, proxyUid: 1337, ...over },
});

let cookie = 1000n;
function end(netns: bigint, local: string, remote: string, st: (Partial<Omit<SockState, 'key'>> & { flags?: number; role?: number; key?: boolean; sent?: number }) | null, rec: Partial<ConnRecord> = {}): EndInput {
  const [lip, lport] = local.split(':');
  const [rip, rport] = remote.split(':');
  const role = st?.role ?? ROLE_CLIENT;
  const clientSide = role === ROLE_CLIENT ? { ip: lip!, port: Number(lport) } : { ip: rip!, port: Number(rport) };
  const state: SockState | null = st === null ? null : {
    key: st.key === false ? { scope: 0n, clientIp: '0.0.0.0', clientPort: 0, clientSeq: 0, serverSeq: 0, role }
      : { scope: 0n, clientIp: clientSide.ip, clientPort: clientSide.port, clientSeq: 100, serverSeq: 200, role },
    netnsCookie: netns, baseWriteSeq: 5000, flags: st.flags ?? 0,
  };
  return {
    netnsCookie: netns, pod: netns === A ? 'ns/a' : netns === B ? 'ns/b' : null, generation: state ? 'g1' : null,
    record: {
      sockCookie: cookie++, bytesAcked: 0n, bytesReceived: 0n, localIp: lip!, remoteIp: rip!, localPort: Number(lport), remotePort: Number(rport),
      family: 4, tcpState: 1, uid: 0, writeSeq: 5000 + (st?.sent ?? 0), ulp: false, repair: false, readerOptions: 0, writerOptions: 0, inSockmap: false, state, ...rec,
    },
  };
}

describe('connections', () => {
  test('two registered ends pair by key across a REDIRECT; both directions redirected', () => {
    const c = end(A, '10.44.0.2:41000', '10.96.0.10:80', { flags: REGISTERED | TX_CLEAN | PAIRED | APP, role: ROLE_CLIENT });
    const s = end(A, '127.0.0.1:15001', '10.44.0.2:41000', { flags: REGISTERED | TX_CLEAN | PAIRED, role: ROLE_SERVER }, { uid: 1337 });
    const [conn, ...rest] = buildConnections([s, c], ctx());
    assert.equal(rest.length, 0);
    assert.equal(conn!.pairedBy, 'key');
    assert.deepEqual(conn!.ends.map((e) => [e.role, e.local, e.sends.mode]), [['client', '10.44.0.2:41000', 'redirected'], ['server', '127.0.0.1:15001', 'redirected']]);
  });

  test('a registered end that has sent nothing is idle; one whose write_seq moved is on TCP', () => {
    const c = end(A, '127.0.0.1:40000', '127.0.0.1:9000', { flags: REGISTERED | TX_CLEAN | PAIRED, role: ROLE_CLIENT, sent: 4096 });
    const s = end(A, '127.0.0.1:9000', '127.0.0.1:40000', { flags: REGISTERED | TX_CLEAN, role: ROLE_SERVER });
    const [conn] = buildConnections([c, s], ctx());
    const [ce, se] = conn!.ends;
    assert.deepEqual([ce!.sends.mode, ce!.sends.reason, ce!.sends.basis, ce!.sends.tcpBytesSinceRegistered], ['tcp', 'unrecorded', 'inferred', 4096]);
    assert.match(ce!.sends.detail, /after redirecting/);
    assert.deepEqual([se!.sends.mode, se!.sends.reason], ['idle', null]);
  });

  test('a direction on TCP while an I8 option or a ULP is set says which, on which end; without one, unrecorded', () => {
    const judge = (cRec: Partial<ConnRecord>, sRec: Partial<ConnRecord>) => {
      const c = end(A, '127.0.0.1:40000', '127.0.0.1:9000', { flags: REGISTERED | TX_CLEAN | PAIRED, role: ROLE_CLIENT, sent: 10 }, cRec);
      const s = end(A, '127.0.0.1:9000', '127.0.0.1:40000', { flags: REGISTERED | TX_CLEAN | PAIRED, role: ROLE_SERVER }, sRec);
      const [conn] = buildConnections([c, s], ctx());
      return conn!.ends.map((e) => [e.sends.mode, e.sends.reason, e.sends.detail]);
    };
    const [reader, other] = judge({}, { readerOptions: 1 | 4 });
    assert.deepEqual(reader!.slice(0, 2), ['tcp', 'socket-option']);
    assert.match(reader![2]!, /the other end has SO_RCVLOWAT above 1, TCP_INQ set/);
    assert.deepEqual(other!.slice(0, 2), ['redirected', null], 'the reader\'s own sends are not concerned');
    const [writer] = judge({ writerOptions: 2 }, {});
    assert.match(writer![2]!, /this end has transmit timestamps \(SO_TIMESTAMPING\) set/);
    // A reader option on the writer's own socket concerns the other direction only.
    assert.deepEqual(judge({ readerOptions: 8 }, {})[0]!.slice(0, 2), ['tcp', 'unrecorded']);
    const [ulp] = judge({}, { ulp: true });
    assert.deepEqual(ulp!.slice(0, 2), ['tcp', 'ulp']);
    assert.match(ulp![2]!, /the other end has a ULP/);
  });

  test('write_seq wrapping past 2^32 still counts the bytes sent over TCP', () => {
    const c = end(A, '127.0.0.1:40000', '127.0.0.1:9000', { flags: REGISTERED | TX_CLEAN, role: ROLE_CLIENT, baseWriteSeq: 0 }, {});
    c.record.state!.baseWriteSeq = 0xffffff00;
    c.record.writeSeq = 0x10;
    const [conn] = buildConnections([c], ctx());
    assert.equal(conn!.ends[0]!.sends.tcpBytesSinceRegistered, 0x110);
  });

  test('the other end in another pod with cross-pod pairing off: cross-pod; with it on, unrecorded', () => {
    const c = end(A, '10.44.0.2:50000', '10.44.0.3:8080', { flags: TX_CLEAN, role: ROLE_CLIENT, sent: 10 }, { uid: 1337 });
    const s = end(B, '10.44.0.3:15006', '10.44.0.2:50000', { flags: REGISTERED | TX_CLEAN, role: ROLE_SERVER, sent: 10 }, { uid: 1337 });
    const off = buildConnections([c, s], ctx());
    assert.deepEqual(off[0]!.ends.map((e) => [e.pod, e.sends.reason]), [['ns/a', 'cross-pod'], ['ns/b', 'cross-pod']]);
    const on = buildConnections([c, s], ctx({ crossPod: true }));
    // The client was released (not registered any more): the server's peer is gone from the sockhash.
    assert.deepEqual(on[0]!.ends.map((e) => e.sends.reason), ['unrecorded', 'no-peer']);
  });

  test('a netns disabled now is given as the likely cause', () => {
    const c = end(A, '127.0.0.1:40000', '127.0.0.1:9000', { flags: REGISTERED | TX_CLEAN | PAIRED, role: ROLE_CLIENT, sent: 1 });
    const [conn] = buildConnections([c], ctx({}, new Map()));
    assert.deepEqual([conn!.ends[0]!.sends.reason, conn!.ends[0]!.sends.basis], ['disabled', 'inferred']);
  });

  test('reasons a socket records: blocking, unknown reader, turned blocking, key conflict, early data', () => {
    const reason = (st: Parameters<typeof end>[3], rec: Partial<ConnRecord> = {}) =>
      buildConnections([end(A, '127.0.0.1:1', '10.0.0.1:2', st, rec)], ctx())[0]!.ends[0]!.sends;
    assert.deepEqual([reason({ flags: APP, key: false }).reason, reason({ flags: APP, key: false }).basis], ['blocking', 'recorded']);
    assert.equal(reason({ flags: APP | LEARN, key: false, role: ROLE_SERVER }).reason, 'unknown-reader');
    assert.equal(reason({ flags: REGISTERED | TX_CLEAN | APP | TURNED_BLOCKING }).reason, 'turned-blocking');
    assert.equal(reason({ flags: 0 }).reason, 'key-conflict');
    assert.equal(reason({ flags: REGISTERED | APP }).reason, 'early-data');
  });

  test('sockets without datapath state: ULP, repair, excluded port, sidecar-only, not seen', () => {
    const reason = (rec: Partial<ConnRecord>, local = '127.0.0.1:1', c = ctx()) => buildConnections([end(A, local, '10.0.0.1:2', null, rec)], c)[0]!.ends[0]!.sends;
    assert.deepEqual([reason({ ulp: true }).reason, reason({ ulp: true }).basis], ['ulp', 'recorded']);
    assert.equal(reason({ repair: true }).reason, 'repair');
    assert.equal(reason({}, '127.0.0.1:9999').reason, 'excluded-port');
    assert.equal(reason({ uid: 1000 }, '127.0.0.1:1', ctx({ sidecarOnly: true })).reason, 'sidecar-only');
    assert.equal(reason({ uid: 1337 }, '127.0.0.1:1', ctx({ sidecarOnly: true })).reason, 'not-seen');
    assert.equal(reason({}).reason, 'not-seen');
  });

  test('without keys, ends pair by addresses only when unambiguous', () => {
    const c = end(A, '127.0.0.1:40000', '127.0.0.1:9000', null);
    const s = end(A, '127.0.0.1:9000', '127.0.0.1:40000', null);
    const far = end(B, '10.44.0.3:1', '10.9.9.9:2', null);
    const conns = buildConnections([c, s, far], ctx());
    assert.deepEqual(conns.map((x) => [x.pairedBy, x.ends.length]), [['addresses', 2], [null, 1]]);
    // The same client address and port to two destinations in one netns behind a REDIRECT: which is whose is unknown.
    const x1 = end(A, '10.44.0.2:40000', '10.96.0.10:80', null);
    const x2 = end(A, '10.44.0.2:40000', '10.96.0.11:80', null);
    const y = end(A, '127.0.0.1:15001', '10.44.0.2:40000', null);
    assert.deepEqual(buildConnections([x1, x2, y], ctx()).map((x) => x.pairedBy), [null, null, null]);
  });

  test('a pod filter keeps the connections with an end in it; the text says bytes are not per connection', () => {
    const c = end(A, '10.44.0.2:50000', '10.44.0.3:8080', { flags: REGISTERED | TX_CLEAN | PAIRED, role: ROLE_CLIENT });
    const s = end(B, '10.44.0.3:8080', '10.44.0.2:50000', { flags: REGISTERED | TX_CLEAN | PAIRED, role: ROLE_SERVER });
    const lone = end(B, '10.44.0.3:1', '10.9.9.9:2', null);
    const all = buildConnections([c, s, lone], ctx());
    assert.equal(connectionsOfPod(all, 'ns/a').length, 1);
    assert.equal(connectionsOfPod(all, 'ns/b').length, 2);
    assert.equal(connectionsOfPod(all, 'ns/c').length, 0);
    const text = connsText(all, [{ pod: 'ns/a', netnsCookie: '11', redirectedBytes: 12345n }], []);
    assert.match(text, /client -> server: redirected/);
    assert.match(text, /not per connection/);
    assert.match(text, /ns\/a: 12345 bytes redirected/);
  });
});

describe('GET /v1/conns', () => {
  const report = { connections: [], pods: [{ pod: 'ns/a', netnsCookie: '11', redirectedBytes: 5n }], note: 'n', problems: [] };
  const app = () => buildApi({
    ready: () => ({ ready: true }), workloads: () => [], stats: () => { throw new Error('unused'); },
    conns: (pod) => {
      if (pod === 'ns/broken') throw new ConnsQueryError('no generation\'s per-socket state can be read', 503);
      if (pod && pod !== 'ns/a') throw new ConnsQueryError(`pod ${pod} is not an enabled pod on this node`);
      return report;
    },
  }, new AgentMetrics(() => undefined));

  test('answers the report as JSON, a pod filter passed through', async () => {
    const api = app();
    const r = await api.inject({ method: 'GET', url: '/v1/conns?pod=ns/a' });
    assert.equal(r.statusCode, 200);
    assert.deepEqual(r.json(), { ...report, pods: [{ pod: 'ns/a', netnsCookie: '11', redirectedBytes: 5 }] });
    await api.close();
  });

  test('an unknown pod is 404 and unreadable state 503, with the reason; a malformed pod 400; writes 405', async () => {
    const api = app();
    const unknown = await api.inject({ method: 'GET', url: '/v1/conns?pod=ns/zz' });
    assert.equal(unknown.statusCode, 404);
    assert.match(unknown.json<{ error: string }>().error, /not an enabled pod/);
    const broken = await api.inject({ method: 'GET', url: '/v1/conns?pod=ns/broken' });
    assert.equal(broken.statusCode, 503);
    assert.match(broken.json<{ error: string }>().error, /state can be read/);
    assert.equal((await api.inject({ method: 'GET', url: '/v1/conns?pod=nopod' })).statusCode, 400);
    assert.equal((await api.inject({ method: 'GET', url: '/v1/conns?pod=a/b&pod=c/d' })).statusCode, 400);
    assert.equal((await api.inject({ method: 'POST', url: '/v1/conns' })).statusCode, 405);
    await api.close();
  });
});
