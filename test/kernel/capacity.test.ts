// Capacity: the maps that bound pairing are sized per generation, a full one
// leaves new sockets on TCP (counted as map_full, never as a key conflict),
// peer_info never evicts a live entry, and nothing is lost either way.
import { describe, test, before } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import path from 'node:path';
import { Mesh, APP_PORT, type PeerProcess } from './mesh.js';
import { kernelSkip, scaled, assertKernelAccess } from './gate.js';
import { assertStreamsIntact, reports } from './streams.js';
import { mapKeys, describeKey } from './keys.js';
import { native, BPF_NOEXIST } from '../../src/datapath/native.js';
import { Datapath } from '../../src/datapath/datapath.js';
import { EXPECTED_LAYOUTS, countersDelta, type Counters } from '../../src/datapath/layout.js';

const BYTES = 256 * 1024;

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

function fill(m: Mesh, map: 'sock_hash' | 'peer_info') {
  return m.dp.mapFill().find((f) => f.map === map)!;
}

function moved(now: Counters, before: Counters): string {
  return Object.entries(countersDelta(now, before)).filter(([, v]) => v !== 0n).map(([k, v]) => `${k}=${v}`).join(' ');
}

describe('capacity', { skip: kernelSkip }, () => {
  before(assertKernelAccess);

  test('a sock_hash of 4 sockets: connections beyond it stay on TCP, counted as map_full, every byte intact', async () => {
    const m = await Mesh.create({ label: 'capfull', crossPod: true, capacity: { sockHash: 4 } });
    try {
      assert.deepEqual(m.dp.capacity(), { sockHash: 4, peerInfo: 131_072 });
      // Sizes belong to the generation: one adopted from its pins keeps them, whatever is asked now.
      const again = Datapath.open({ cgroupPath: m.topo.cgroupDir, pinRoot: m.pinRoot, capacity: { sockHash: 99, peerInfo: 99 } });
      try {
        assert.equal(again.adopted, true);
        assert.deepEqual(again.capacity(), { sockHash: 4, peerInfo: 131_072 });
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
      await until(() => fill(m, 'sock_hash').entries === 0 && fill(m, 'peer_info').entries === 0, 'both maps empty once every connection closed');
      console.log(`sock_hash of 4: ${moved(m.counters(), before)}`);
    } finally {
      await m.close();
    }
  });

  test('a full peer_info evicts no live entry: a new socket stays on TCP (map_full); the agent\'s sweep deletes only entries no socket owns', async () => {
    // peer_info smaller than sock_hash, so it is the one that fills.
    const m = await Mesh.create({ label: 'capinfo', capacity: { sockHash: 64, peerInfo: 8 } });
    const n = native();
    const fd = n.objGet(path.join(m.dp.pinDir, 'map_peer_info'));
    try {
      const srv = m.startPeer(m.a, ['server', '--listen', '127.0.0.1:9620', '--bytes', String(BYTES), '--end-after-peer', '1', '--expect', String(BYTES)]);
      await srv.ready();
      await m.learnListener(m.a, '127.0.0.1:9620');
      const first = m.startPeer(m.a, ['client', '--connect', '127.0.0.1:9620', '--bytes', String(BYTES), '--conns', '2',
        '--concurrency', '2', '--hold', '1', '--expect', String(BYTES)]);
      await holding(first, 2);
      // Two paired connections: four live entries (the listener probe's are gone once it closed).
      await until(() => fill(m, 'peer_info').entries === 4 && fill(m, 'sock_hash').entries === 4, 'four live sockets registered');
      const live = mapKeys(m, 'peer_info').map((k) => k.raw.toString('hex'));
      // Four entries no socket owns, as a missed delete would leave: the map is full.
      const orphans = Array.from({ length: 4 }, () => {
        const k = crypto.randomBytes(EXPECTED_LAYOUTS.accel_conn_key!.size);
        n.mapUpdate(fd, k, Buffer.alloc(EXPECTED_LAYOUTS.accel_peer_info!.size), BPF_NOEXIST);
        return k.toString('hex');
      });
      assert.equal(fill(m, 'peer_info').entries, 8);
      const before = m.counters();
      const second = m.startPeer(m.a, ['client', '--connect', '127.0.0.1:9620', '--bytes', String(BYTES), '--conns', '1',
        '--concurrency', '1', '--hold', '1', '--expect', String(BYTES)]);
      await holding(second, 1);
      const d = countersDelta(m.counters(), before);
      assert.equal(d.fallbackMapFull, 2n, `both ends of the new connection stay on TCP as map_full: ${moved(m.counters(), before)}`);
      assert.equal(d.socketsRegistered, 0n);
      const present = new Set(mapKeys(m, 'peer_info').map((k) => k.raw.toString('hex')));
      for (const k of [...live, ...orphans]) assert.ok(present.has(k), `entry ${k} was evicted; the map holds ${mapKeys(m, 'peer_info').map(describeKey).join('; ')}`);
      assert.equal(fill(m, 'sock_hash').entries, 4, 'the refused sockets left sock_hash');
      // The sweep deletes a key no sock_hash entry has at two sweeps in a row, and only those.
      assert.equal(m.dp.sweepPeerInfo(), 0, 'the first sweep only notes candidates');
      assert.equal(m.dp.sweepPeerInfo(), 4);
      assert.deepEqual(new Set(mapKeys(m, 'peer_info').map((k) => k.raw.toString('hex'))), new Set(live));
      first.child.kill('SIGUSR1');
      second.child.kill('SIGUSR1');
      const lines = [...await first.finished(), ...await second.finished()];
      await srv.waitFor(() => serverReports(srv).length >= 3, 'all server reports');
      assertStreamsIntact(reports(lines, 'client'), serverReports(srv), 3, () => moved(m.counters(), before));
      await until(() => fill(m, 'sock_hash').entries === 0 && fill(m, 'peer_info').entries === 0, 'both maps empty once every connection closed');
    } finally {
      n.closeFd(fd);
      await m.close();
    }
  });
});
