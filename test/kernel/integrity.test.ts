// Every byte arrives, in order, whatever the write sizes: >= 1 GiB in total
// (a quarter of it under emulation), writes of 1 B .. 4 MiB at random
// boundaries, both directions at once.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { useMesh, APP_PORT, movedCounters, type Mesh } from './mesh.js';
import type { Pod } from '../../lab/topology/topology.js';
import { kernelSkip, scaled, slowdown } from './gate.js';
import { assertStreamsIntact, reports } from './streams.js';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { countersDelta, type Counters } from '../../src/datapath/layout.js';

const MiB = 1 << 20;
/**
 * Each stream's size each way: 64 MiB, 512 MiB a case (four streams, both
 * ways), 1 GiB over the two datapath cases. Under emulation (the kernel
 * matrix) 16 MiB: the writes still run 1 B .. 4 MiB at random boundaries,
 * in a quarter of the time.
 */
const STREAM = slowdown > 1 ? 16 * MiB : 64 * MiB;

/** For a failure's message: the counters that moved, and both sidecars' session logs (which hop came up short). */
async function diagnostics(m: Mesh, before: Counters): Promise<string> {
  const logs = await Promise.all([m.a, m.b].map(async (p) => `sidecar of ${p.name}:\n${await p.sidecarSessions().catch((e: Error) => e.message)}`));
  return [countersSince(m.counters(), before), ...logs].join('\n');
}

/** The datapath's counters that moved since `before`. */
function countersSince(now: Counters, before: Counters): string {
  return `datapath counters since the start: ${movedCounters(countersDelta(now, before))}`;
}

/**
 * Runs `conns` streams of `bytes` each way between a stream-peer client in pod
 * a and a server in `serverPod`, and asserts every one arrived intact (with
 * the counters and session logs on failure). `learn`: probe the listener
 * first, so the datapath knows how its sockets are read (I6).
 */
async function assertStreamsThrough(m: Mesh, o: { serverPod: Pod; listen: string; target: string; conns: number; bytes: number; learn: boolean }): Promise<void> {
  const before = m.counters();
  const srv = m.startPeer(o.serverPod, ['server', '--listen', o.listen, '--bytes', String(o.bytes), '--max-write', String(4 * MiB)]);
  try {
    await srv.ready();
    if (o.learn) await m.learnListener(m.a, o.target);
    const cli = m.startPeer(m.a, ['client', '--connect', o.target, '--bytes', String(o.bytes),
      '--conns', String(o.conns), '--concurrency', String(o.conns), '--max-write', String(4 * MiB)]);
    const lines = await cli.finished();
    await srv.waitFor(() => srv.objects.filter((x) => x.role === 'server').length >= o.conns, 'all server reports');
    const context = await diagnostics(m, before);
    assertStreamsIntact(reports(lines, 'client'), reports(srv.objects, 'server'), o.conns, () => context);
  } finally {
    await srv.stop();
  }
}

// One pair of pods for every case, each setting its own policy first: a
// pair costs a dozen seconds under an emulated kernel.
describe('integrity', { skip: kernelSkip }, () => {
  const mesh = useMesh({ label: 'integ', crossPod: true, enable: false });

  describe('byte-stream integrity', () => {
    const cases = [
      // Through both sidecars: three redirected hops per stream.
      { name: 'app -> sidecar -> sidecar -> app', pod: 'b' as const, listen: `0.0.0.0:${APP_PORT}`, target: 'vip', conns: 4, bytes: STREAM },
      // One hop, the two apps in one pod over loopback.
      { name: 'in-pod loopback', pod: 'a' as const, listen: '127.0.0.1:9600', target: '127.0.0.1:9600', conns: 4, bytes: STREAM },
    ];
    for (const c of cases) {
      test(`${c.name}: ${c.conns} x ${c.bytes / MiB} MiB each way, writes of 1 B .. 4 MiB`, async () => {
        mesh().setPolicy(true, {}, {});
        const before = mesh().counters().redirectedBytes;
        await assertStreamsThrough(mesh(), { serverPod: c.pod === 'b' ? mesh().b : mesh().a, listen: c.listen,
          target: c.target === 'vip' ? mesh().vip() : c.target, conns: c.conns, bytes: c.bytes, learn: true });
        const redirected = mesh().counters().redirectedBytes - before;
        assert.ok(redirected > 0n, 'nothing was redirected');
        console.log(`${c.name}: ${(2 * c.conns * c.bytes) / MiB} MiB checked, ${redirected / BigInt(MiB)} MiB redirected over all hops`);
      });
    }
  });

  // The control: the same streams through the same sidecars with the datapath
  // off. A loss here is the harness's (the sidecar proxy, the topology), not
  // the datapath's; HAProxy 2.6 polling level-triggered lost bytes this way on
  // 6.12 under qemu (lab/topology/haproxy.ts).
  describe('byte-stream integrity with the datapath off (control)', () => {
    test(`app -> sidecar -> sidecar -> app over plain TCP: 4 x ${STREAM / MiB} MiB each way, nothing redirected`, async () => {
      const m = mesh().setPolicy(true, 'off', 'off');
      const before = m.counters();
      await assertStreamsThrough(m, { serverPod: m.b, listen: `0.0.0.0:${APP_PORT}`, target: m.vip(), conns: 4, bytes: STREAM, learn: false });
      assert.equal(m.counters().redirectedBytes - before.redirectedBytes, 0n, 'the datapath was off, yet bytes were redirected');
    });
  });

  // tcp_mem is one setting for the whole machine: lowered for this test only,
  // restored in its finally. Under pressure the kernel may refuse to charge a
  // redirect (ENOMEM or EPIPE to the sender, or lost bytes on 6.12): the
  // datapath must fall back to TCP first, which holds the writer back instead.
  describe('byte-stream integrity under TCP memory pressure', () => {
    test('tcp_mem pressure: every byte arrives, no application sees an error, the fallback is counted', async () => {
      const file = '/proc/sys/net/ipv4/tcp_mem';
      const saved = fs.readFileSync(file, 'utf8');
      mesh().setPolicy(true, {}, {});
      const before = mesh().counters();
      try {
        fs.writeFileSync(file, '4000 6000 32000'); // pages: pressure from 24 MiB on, the hard limit at 125 MiB (far enough that plain TCP does not run out)
        await assertStreamsThrough(mesh(), { serverPod: mesh().b, listen: `0.0.0.0:${APP_PORT}`, target: mesh().vip(), conns: 4, bytes: 16 * MiB, learn: true });
      } finally {
        fs.writeFileSync(file, saved);
      }
      const d = countersDelta(mesh().counters(), before);
      assert.ok(d.fallbackMemoryPressure > 0n, `the pressure never refused a redirect: ${countersSince(mesh().counters(), before)}`);
    });
  });

  // I7 (bpf/): a reader never holds bytes in two queues. Its writer fell back
  // to TCP while the reader had redirected bytes unread; the TCP bytes and the
  // FIN then arrive. Accepted at once, a read would return only the redirected
  // ones with RDHUP already set, and HAProxy and libuv end the stream there.
  describe('a reader with redirected bytes unread when its writer falls back to TCP', () => {
    const script = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../test/peers/switch-reader.py');

    for (const [i, [first, second]] of ([[30_000, 30_000], [30_000, 300_000], [3_000_000, 3_000_000]] as const).entries()) {
      const port = 9530 + i;
      test(`${first} bytes redirected, then ${second} over TCP and a FIN: an edge-triggered short-read-at-RDHUP reader gets them all`, async () => {
        const m = mesh().setPolicy(false, {}, 'off');
        const before = m.dp.netnsCounters(m.cookieA)!;
        const p = m.start(m.a, 'python3', [script, String(port), String(first), String(second), String(scaled(30_000) / 1000)]);
        await p.waitFor((o) => o.phase === 'redirected', 'the redirected part');
        m.dp.disable(m.cookieA, { keepCounters: true });
        p.child.kill('SIGUSR1');
        await p.waitFor((o) => o.phase === 'tcp-sending', 'the TCP part');
        // Either event must come: the datapath held a segment back, or (with
        // no gate) the FIN reached the reader's queue.
        await until(async () => m.dp.netnsCounters(m.cookieA)!.tcpHeldBack > before.tcpHeldBack
          || (await m.a.exec('ss', ['-Htn', 'state', 'close-wait', `dport = :${port}`])).stdout.trim() !== '');
        p.child.kill('SIGUSR1');
        const out = (await p.finished()).find((o) => 'got' in o);
        const d = countersDelta(m.dp.netnsCounters(m.cookieA)!, before);
        assert.ok(d.redirectedBytes >= BigInt(first), `the first part was not redirected: ${d.redirectedBytes}`);
        assert.deepEqual(out && { got: out.got, intact: out.intact, unreadAtEnd: out.unreadAtEnd },
          { got: first + second, intact: true, unreadAtEnd: 0 }, JSON.stringify(out));
        assert.ok(d.tcpHeldBack > 0n, 'no TCP segment was held back');
      });
    }
  });
});

/** Resolves when check() is true, checking at every counter/queue change we can see (polled: these have no notification). */
async function until(check: () => Promise<boolean>, what = 'the TCP part to reach the reader'): Promise<void> {
  const deadline = Date.now() + scaled(30_000);
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not seen within ${scaled(30_000)} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
