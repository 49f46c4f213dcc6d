// Capacity: sock_hash, the map that bounds pairing, is sized per generation;
// full, it leaves new sockets on TCP (counted as map_full, never as a key
// conflict), and nothing is lost.
import { describe, test, before } from 'node:test';
import assert from 'node:assert/strict';
import { Mesh, APP_PORT, movedCounters, type PeerProcess } from './mesh.js';
import { kernelSkip, scaled, assertKernelAccess } from './gate.js';
import { assertStreamsIntact, reports } from './streams.js';
import { Datapath } from '../../src/datapath/datapath.js';
import { native, isNativeError } from '../../src/datapath/native.js';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { countersDelta, type Counters } from '../../src/datapath/layout.js';

const BYTES = 256 * 1024;
const buildTest = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../build/test');

/** Resolves when check() holds; polled, the kernel's maps have no notification. */
async function until(check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + scaled(10_000);
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what}: not seen within ${scaled(10_000)} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function holding(p: PeerProcess, n: number): Promise<unknown> {
  return p.waitFor(() => p.objects.filter((o) => o.event === 'holding').length >= n, `${n} connections holding`);
}

/** A server's stream reports (its "received" events carry a role too). */
function serverReports(p: PeerProcess) {
  return reports(p.objects.filter((o) => o.event === undefined), 'server');
}

function fill(m: Mesh, map: 'sock_hash' | 'pod_addrs') {
  return m.dp.mapFill().find((f) => f.map === map)!;
}

function moved(now: Counters, before: Counters): string {
  return movedCounters(countersDelta(now, before));
}

describe('capacity', { skip: kernelSkip }, () => {
  before(assertKernelAccess);

  test('a sock_hash of 4 sockets: connections beyond it stay on TCP, counted as map_full, every byte intact', async () => {
    const m = await Mesh.create({ label: 'capfull', crossPod: true, capacity: { sockHash: 4 } });
    try {
      assert.deepEqual(m.dp.capacity(), { sockHash: 4 });
      // Sizes belong to the generation: one adopted from its pins keeps them, whatever is asked now.
      const again = Datapath.open({ cgroupPath: m.topo.cgroupDir, pinRoot: m.pinRoot, capacity: { sockHash: 99 } });
      try {
        assert.equal(again.adopted, true);
        assert.deepEqual(again.capacity(), { sockHash: 4 });
      } finally {
        again.close();
      }
      const srv = m.startPeer(m.b, ['server', '--listen', `0.0.0.0:${APP_PORT}`, '--bytes', String(BYTES), '--end-after-peer', '1', '--expect', String(BYTES)]);
      await srv.ready();
      await m.learnListener();
      const before = m.counters();
      // Ten connections through both sidecars, all open at once: up to 60 sockets for 4 slots.
      const conns = 10;
      const cli = m.startPeer(m.a, ['client', '--connect', m.vip(), '--bytes', String(BYTES), '--conns', String(conns),
        '--concurrency', String(conns), '--hold', '1', '--expect', String(BYTES)]);
      await holding(cli, conns);
      const full = fill(m, 'sock_hash');
      const mid = m.counters();
      assert.equal(full.maxEntries, 4);
      assert.ok(full.entries <= 4, `sock_hash holds ${full.entries} of 4`);
      const d = countersDelta(mid, before);
      assert.ok(d.fallbackMapFull > 0n, `no socket was counted as map_full: ${moved(mid, before)}`);
      assert.equal(d.fallbackKeyConflict, 0n, 'a full map was counted as a key conflict');
      assert.ok(d.socketsRegistered <= 4n + d.socketsReleased, `more sockets registered than fit: ${moved(mid, before)}`);
      cli.child.kill('SIGUSR1');
      const lines = await cli.finished();
      await srv.waitFor(() => serverReports(srv).length >= conns, 'all server reports');
      assertStreamsIntact(reports(lines, 'client'), serverReports(srv), conns, () => moved(m.counters(), before));
      await until(() => fill(m, 'sock_hash').entries === 0, 'sock_hash empty once every connection closed');
      console.log(`sock_hash of 4: ${moved(m.counters(), before)}`);
    } finally {
      await m.close();
    }
  });

  test('a socket another sockmap user\'s programs hold is not taken: counted as socket_busy, not key_conflict, every byte intact', async () => {
    const m = await Mesh.create({ label: 'capbusy' });
    const n = native();
    // Another user's programs, on pod a's own cgroup: they run before the datapath's (on a parent).
    const other = n.loadObject(path.join(buildTest, 'other-sockmap.bpf.o'));
    let link = -1;
    let attached = false;
    try {
      n.progAttach(other.progs.other_msg!, other.maps.other_hash!, 'sk_msg_verdict');
      attached = true;
      link = n.linkCgroup(other.progs.other_sockops!, m.a.cgroupDir, 'cgroup_sock_ops');
      const srv = m.startPeer(m.a, ['server', '--listen', '127.0.0.1:9640', '--bytes', String(BYTES)]);
      await srv.ready();
      await m.learnListener(m.a, '127.0.0.1:9640');
      const before = m.counters();
      const cli = m.startPeer(m.a, ['client', '--connect', '127.0.0.1:9640', '--bytes', String(BYTES), '--conns', '2', '--concurrency', '2']);
      const lines = await cli.finished();
      await srv.waitFor(() => serverReports(srv).length >= 2, 'both server reports');
      assertStreamsIntact(reports(lines, 'client'), serverReports(srv), 2, () => moved(m.counters(), before));
      const d = countersDelta(m.counters(), before);
      // Both ends of both connections (the server's accepted sockets are refused before their listener is even learned).
      console.log(`socket_busy: ${moved(m.counters(), before)}`);
      assert.ok(d.fallbackSocketBusy >= 3n, `the held sockets were not counted as socket_busy: ${moved(m.counters(), before)}`);
      assert.equal(d.fallbackKeyConflict, 0n, 'a held socket was counted as a key conflict');
      assert.equal(d.redirectedMessages, 0n, 'a socket another user holds was redirected');
      srv.child.kill('SIGKILL');
    } finally {
      if (link >= 0) { n.linkDetach(link); n.closeFd(link); }
      if (attached) { try { n.progDetach(other.progs.other_msg!, other.maps.other_hash!, 'sk_msg_verdict'); } catch (e) { if (!isNativeError(e)) throw e; } }
      for (const fd of [...Object.values(other.maps), ...Object.values(other.progs)]) n.closeFd(fd);
      await m.close();
    }
  });
});
