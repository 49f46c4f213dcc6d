// Every hop of the sidecar path is paired and redirected, proven by the
// kernel's own socket counters (ss) and the pods' segment counters (snmp):
//   app(a) -> VIP:80 -> 15001 sidecar(a) -> pod b:8080 -> 15006 sidecar(b) -> app(b) from 127.0.0.6
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Mesh, APP_PORT, movedCounters, useMesh, type PeerProcess } from './mesh.js';
import { ssSockets, tcpOutSegs, addr, type SsSocket } from '../../lab/measure/kernel.js';
import { kernelSkip, slowdown } from './gate.js';
import { countersDelta, type Counters } from '../../src/datapath/layout.js';
import { SERVICE_VIP4, SERVICE_VIP6 } from '../../lab/topology/topology.js';
import { netnsCookieOfPath } from '../../src/datapath/netns.js';

// Each way through every hop; under emulation (the kernel matrix) a fifth,
// still some thousands of messages, which is what the counts below ask.
const BYTES = slowdown > 1 ? 4_000_000 : 20_000_000;

interface Hop { name: string; client: SsSocket; server: SsSocket }

function port(a: string): number {
  return Number(a.slice(a.lastIndexOf(':') + 1));
}
function host(a: string): string {
  return addr(a).slice(0, addr(a).lastIndexOf(':'));
}

/** Finds the two sockets of each hop among the pods' sockets. */
async function hops(m: Mesh, family: 4 | 6): Promise<Hop[]> {
  const inA = (await ssSockets(m.a)).filter((s) => s.state === 'ESTAB');
  const inB = (await ssSockets(m.b)).filter((s) => s.state === 'ESTAB');
  const ipA = family === 4 ? m.a.ip4 : m.a.ip6;
  const ipB = family === 4 ? m.b.ip4 : m.b.ip6;
  const vip = family === 4 ? SERVICE_VIP4 : SERVICE_VIP6;
  const inboundSrc = family === 4 ? '127.0.0.6' : '::6';
  const one = (list: SsSocket[], what: string, pred: (s: SsSocket) => boolean) => {
    const found = list.filter(pred);
    assert.equal(found.length, 1, `${what}: expected one socket, found ${JSON.stringify(found)} among ${JSON.stringify(list)}`);
    return found[0]!;
  };
  const app = one(inA, 'app -> VIP', (s) => host(s.peer) === vip && port(s.peer) === 80);
  const hop1Server = one(inA, 'sidecar a 15001', (s) => port(s.local) === 15001 && addr(s.peer) === addr(app.local));
  const hop2Client = one(inA, 'sidecar a -> b', (s) => host(s.peer) === ipB && port(s.peer) === APP_PORT);
  const hop2Server = one(inB, 'sidecar b 15006', (s) => port(s.local) === 15006 && host(s.peer) === ipA
    && port(s.peer) === port(hop2Client.local));
  const hop3Client = one(inB, 'sidecar b -> app', (s) => host(s.local) === inboundSrc && port(s.peer) === APP_PORT);
  const hop3Server = one(inB, 'app b', (s) => port(s.local) === APP_PORT && addr(s.peer) === addr(hop3Client.local));
  return [
    { name: 'app -> VIP -> 15001', client: app, server: hop1Server },
    { name: 'sidecar a -> sidecar b 15006', client: hop2Client, server: hop2Server },
    { name: '15006 -> app from inbound source', client: hop3Client, server: hop3Server },
  ];
}

async function runHeld(m: Mesh, family: 4 | 6): Promise<{ hops: Hop[]; segs: number; msgs: bigint; delta: Counters }> {
  const srv = m.startPeer(m.b, ['server', '--listen', family === 4 ? `0.0.0.0:${APP_PORT}` : `[::]:${APP_PORT}`, '--bytes', String(BYTES), '--end-after-peer', '1', '--expect', String(BYTES)]);
  let cli: PeerProcess | undefined;
  try {
    await srv.ready();
    // The redirect bound is what TCP allows a receiver (tcp_rmem's maximum):
    // 32 MiB in both pods, so the BYTES each way never reach it even with a
    // slow (emulated) reader, and every hop stays redirected. (Debian's default
    // is 6 MiB: past it the direction goes to TCP, by design, docs/design.md 5.3.)
    for (const pod of [m.a, m.b]) await pod.exec('sysctl', ['-qw', 'net.ipv4.tcp_rmem=4096 131072 33554432']);
    await m.learnListener(m.a, m.vip(family));
    const segsBefore = (await tcpOutSegs(m.a)) + (await tcpOutSegs(m.b));
    const countersBefore = m.counters();
    const before = countersBefore.redirectedMessages;
    cli = m.startPeer(m.a, ['client', '--connect', m.vip(family), '--bytes', String(BYTES), '--hold', '1', '--expect', String(BYTES)]);
    // Every byte has crossed every hop both ways: what ss shows is final.
    await cli.waitFor((o) => o.event === 'holding', 'holding');
    await srv.waitFor((o) => o.event === 'received', 'server received all');
    const found = await hops(m, family);
    const segs = (await tcpOutSegs(m.a)) + (await tcpOutSegs(m.b)) - segsBefore;
    const msgs = m.counters().redirectedMessages - before;
    cli.child.kill('SIGUSR1');
    const lines = await cli.finished();
    const client = lines.find((o) => o.role === 'client')!;
    const server = await srv.waitFor((o) => o.role === 'server' && o.peerId === client.id, 'server report');
    assert.equal(client.sentSha, server.recvSha, 'client -> server bytes differ');
    assert.equal(server.sentSha, client.recvSha, 'server -> client bytes differ');
    assert.equal(client.recvBytes, BYTES);
    return { hops: found, segs, msgs, delta: countersDelta(m.counters(), countersBefore) };
  } finally {
    // The next case on these pods listens on the same port, and finds its hops among every socket there.
    await cli?.stop();
    await srv.stop();
  }
}

/** Every byte of the hop's both ends redirected; the counters say why when not. */
function assertRedirected(h: Hop, delta: Counters): void {
  const why = movedCounters(delta);
  for (const [end, s] of [['client', h.client], ['server', h.server]] as const) {
    assert.equal(s.dataSegsOut, 0, `${h.name}: ${end} ${s.local} sent ${s.dataSegsOut} TCP data segments (${s.bytesSent} bytes); counters: ${why}`);
  }
}

function assertOverTcp(h: Hop): void {
  assert.ok(h.client.bytesSent >= BYTES && h.server.bytesSent >= BYTES,
    `${h.name}: expected TCP to carry the bytes, saw ${h.client.bytesSent} / ${h.server.bytesSent}`);
}

// One pair of pods for every case: each sets the node's cross-pod flag and
// which pods are enabled, with what, before its stream (pod b not enabled
// stands in for a pod on another node). A pod pair costs a dozen seconds
// under an emulated kernel; the cases differ only in this policy.
describe('which sockets of the sidecar path pair', { skip: kernelSkip }, () => {
  const mesh = useMesh({ label: 'hops', enable: false });
  const policy = (...args: Parameters<Mesh['setPolicy']>): Mesh => mesh().setPolicy(...args);

  describe('every hop of the sidecar path', () => {
    test('in-pod hops are redirected, the cross-pod hop stays on TCP without the flag', async () => {
      const r = await runHeld(policy(false, {}, {}), 4);
      assertRedirected(r.hops[0]!, r.delta);
      assertOverTcp(r.hops[1]!);
      assertRedirected(r.hops[2]!, r.delta);
      assert.ok(r.delta.fallbackCrossPod > 0n, 'the cross-pod hop was refused for the flag');
      // Both ends of the cross-pod hop left the sockhash after their first
      // ACK: the rest of that connection ran on plain TCP, intact.
      assert.equal(r.delta.socketsReleased, 2n);
    });

    test('a socket whose peer cannot pair goes back to plain TCP; its stream stays intact', async () => {
      const r = await runHeld(policy(true, {}, 'off'), 4);
      assertRedirected(r.hops[0]!, r.delta);
      assertOverTcp(r.hops[1]!);
      assertOverTcp(r.hops[2]!);
      const c = r.delta;
      assert.equal(c.socketsReleased, 1n, 'sidecar a\'s upstream socket, and only it, was released');
      assert.ok(c.socketsPaired >= 2n, 'the in-pod hop stayed paired');
    });

    test('cross-pod pairing on, but one pod not a known mesh workload: that hop stays on TCP, in-pod hops pair', async () => {
      const r = await runHeld(policy(true, { crossPod: true }, { crossPod: false }), 4);
      assertRedirected(r.hops[0]!, r.delta);
      assertOverTcp(r.hops[1]!);
      assertRedirected(r.hops[2]!, r.delta);
      const c = r.delta;
      assert.ok(c.fallbackCrossPod > 0n, 'the cross-pod hop was refused');
      assert.equal(c.socketsReleased, 2n, 'both ends of the refused hop went back to TCP');
    });

    for (const family of [4, 6] as const) {
      test(`with cross-pod pairing every hop is redirected (IPv${family})`, async () => {
        const r = await runHeld(policy(true, {}, {}), family);
        for (const h of r.hops) assertRedirected(h, r.delta);
        assert.equal(r.delta.socketsReleased, 0n, 'a paired socket is never released');
        // Only handshakes and FINs remain on the wire: a few segments per socket
        // against thousands of messages redirected.
        assert.ok(r.msgs > 1000n, `redirected messages ${r.msgs}`);
        assert.ok(BigInt(r.segs) * 20n < r.msgs, `TcpOutSegs grew ${r.segs} for ${r.msgs} redirected messages`);
        console.log(`IPv${family}: ${r.msgs} messages redirected, TcpOutSegs +${r.segs} in both pods`);
      });
    }

    // The agent knows every pod's addresses (ACCEL_NETNS_ADDRS_KNOWN): a sidecar
    // socket whose other end is no pod of this node is never registered at all,
    // where above it was registered and released at its first ACK.
    const known = { crossPod: true, addressesKnown: true };
    for (const family of [4, 6] as const) {
      test(`pods' addresses known, cross-pod off: the sidecars' sockets between the pods are never registered, in-pod hops pair (IPv${family})`, async () => {
        const r = await runHeld(policy(false, known, known), family);
        assertRedirected(r.hops[0]!, r.delta);
        assertOverTcp(r.hops[1]!);
        assertRedirected(r.hops[2]!, r.delta);
        assert.equal(r.delta.fallbackNeverPairs, 2n, 'sidecar a\'s upstream and sidecar b\'s inbound socket were left alone');
        assert.equal(r.delta.socketsReleased, 0n, 'a socket that was left alone never entered the sockhash');
        assert.equal(r.delta.fallbackCrossPod, 0n);
      });
    }

    test('pods\' addresses known, the peer pod not enabled (another node): sidecar a\'s upstream is never registered', async () => {
      const r = await runHeld(policy(true, known, 'off'), 4);
      assertRedirected(r.hops[0]!, r.delta);
      assertOverTcp(r.hops[1]!);
      assert.equal(r.delta.fallbackNeverPairs, 1n);
      assert.equal(r.delta.socketsReleased, 0n);
    });

    test('pods\' addresses known, cross-pod on: every hop still pairs, nothing is left alone', async () => {
      const r = await runHeld(policy(true, known, known), 4);
      for (const h of r.hops) assertRedirected(h, r.delta);
      assert.equal(r.delta.fallbackNeverPairs, 0n);
    });
  });

  // A pod whose sidecar captures none of its applications' outbound (inbound)
  // TCP: an application's socket then names its true other end, and one to no
  // pod of this node is left alone as a sidecar's is. Pods c and d have no
  // capture rules at all, as such a pod's traffic has none.
  describe('an application\'s socket where its sidecar captures none of that direction', () => {
    test('outbound (inbound) direct: a socket to (from) no pod of this node is never registered; one over loopback still pairs', async () => {
      // Last, as it adds two pods to the pair.
      const m = policy(false, 'off', 'off');
      const c = await m.topo.addPod('c');
      const d = await m.topo.addPod('d');
      const cookieC = netnsCookieOfPath(c.netnsPath);
      const cookieD = netnsCookieOfPath(d.netnsPath);
      m.dp.setPodAddresses(new Map([...m.dp.podAddresses(), [c.ip4, cookieC], [c.ip6, cookieC], [d.ip4, cookieD], [d.ip6, cookieD]]));
      // One stream c -> d, both pods enabled (cross-pod off: they can never pair), with or without the direct flags.
      let port = 9910;
      const stream = async (direct: boolean) => {
        m.dp.enable(cookieC, { crossPod: false, addressesKnown: true, outboundDirect: direct });
        m.dp.enable(cookieD, { crossPod: false, addressesKnown: true, inboundDirect: direct });
        const c0 = m.dp.netnsCounters(cookieC)!;
        const d0 = m.dp.netnsCounters(cookieD)!;
        const srv = m.startPeer(d, ['server', '--listen', `0.0.0.0:${port}`, '--bytes', '100000']);
        await srv.ready();
        const cli = m.startPeer(c, ['client', '--connect', `${d.ip4}:${port++}`, '--bytes', '100000']);
        const client = (await cli.finished()).find((o) => o.role === 'client')!;
        const server = await srv.waitFor((o) => o.role === 'server' && o.peerId === client.id, 'server report');
        assert.equal(client.sentSha, server.recvSha, 'client -> server bytes differ');
        assert.equal(server.sentSha, client.recvSha, 'server -> client bytes differ');
        await srv.stop();
        return { c: countersDelta(m.dp.netnsCounters(cookieC)!, c0), d: countersDelta(m.dp.netnsCounters(cookieD)!, d0) };
      };
      const captured = await stream(false);
      assert.equal(captured.c.socketsRegistered, 1n, 'the client socket is registered when its pod may capture its outbound');
      assert.equal(captured.c.fallbackNeverPairs, 0n);
      assert.equal(captured.d.fallbackNeverPairs, 0n);
      const direct = await stream(true);
      assert.equal(direct.c.fallbackNeverPairs, 1n, 'the client socket to a pod it cannot pair with was not left alone');
      assert.equal(direct.c.socketsRegistered, 0n);
      assert.equal(direct.d.fallbackNeverPairs, 1n, 'the accepted socket from a pod it cannot pair with was not left alone');
      assert.equal(direct.d.socketsRegistered, 0n);
      // In the pod itself, over loopback, the two ends still pair.
      const before = m.dp.netnsCounters(cookieC)!;
      const r = await m.runCase(c, 'peek', port++);
      assert.equal(r.read, 'hello world');
      const loop = countersDelta(m.dp.netnsCounters(cookieC)!, before);
      assert.ok(loop.socketsPaired >= 1n && loop.redirectedMessages >= 1n, `loopback did not pair: ${movedCounters(loop)}`);
      assert.equal(loop.fallbackNeverPairs, 0n);
    });
  });
});
