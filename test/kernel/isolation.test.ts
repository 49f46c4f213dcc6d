// Only enabled workloads are touched, and nothing crosses between pods.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { Mesh, PeerProcess, caseScript } from './mesh.js';
import { kernelSkip, assertKernelAccess } from './gate.js';

describe('isolation', { skip: kernelSkip }, () => {
  let m: Mesh;
  before(async () => {
    assertKernelAccess();
    m = await Mesh.create({ label: 'iso', enable: false });
  });
  after(async () => { await m?.close(); });

  test('two pods using the same 127.0.0.1 4-tuple at once: nothing crosses', async () => {
    m.enableAll();
    try {
      const before = m.counters().socketsPaired;
      const pa = m.startCase(m.a, 'fixed-tuple', 9500, { CASE_TAG: 'AAAA' });
      const pb = m.startCase(m.b, 'fixed-tuple', 9500, { CASE_TAG: 'bbbb' });
      await Promise.all([pa.waitFor((o) => o.event === 'connected'), pb.waitFor((o) => o.event === 'connected')]);
      // Both connections exist now, with identical addresses and ports.
      pa.child.kill('SIGUSR1');
      pb.child.kill('SIGUSR1');
      for (const p of [pa, pb]) {
        await p.finished();
        assert.deepEqual(p.objects.find((o) => o.case)?.result, { serverGotOwn: true, clientGotOwn: true });
      }
      assert.equal(m.counters().socketsPaired - before, 4n, 'both pairs were accelerated');
    } finally {
      m.dp.disable(m.cookieA);
      m.dp.disable(m.cookieB);
    }
  });

  test('a disabled pod is never paired', async () => {
    const before = m.counters();
    const r = await m.runCase(m.b, 'halfclose', 9501);
    assert.equal(r.serverGotAll, true);
    const after = m.counters();
    assert.equal(after.socketsSeen, before.socketsSeen, 'a socket of a disabled netns was looked at');
    assert.equal(after.redirectedMessages, before.redirectedMessages);
  });

  test('a process outside any pod is never paired', async () => {
    m.enableAll();
    try {
      const before = m.counters();
      // In the attach cgroup but in the host's network namespace.
      const child = spawn('bash', ['-c', 'echo $$ > "$0/cgroup.procs" && exec python3 "$1" halfclose 9502',
        m.topo.cgroupDir, caseScript], { stdio: ['ignore', 'pipe', 'pipe'] });
      const p = new PeerProcess(child);
      await p.finished();
      assert.equal((p.objects[0]?.result as { serverGotAll: boolean }).serverGotAll, true);
      const after = m.counters();
      assert.equal(after.socketsSeen, before.socketsSeen);
      assert.equal(after.redirectedMessages, before.redirectedMessages);
    } finally {
      m.dp.disable(m.cookieA);
      m.dp.disable(m.cookieB);
    }
  });

  test('an excluded port is never paired, other ports of the pod are', async () => {
    m.dp.enable(m.cookieA, { excludePorts: [9503] });
    try {
      const before = m.dp.netnsCounters(m.cookieA)!;
      await m.runCase(m.a, 'halfclose', 9503);
      const mid = m.dp.netnsCounters(m.cookieA)!;
      assert.equal(mid.fallbackExcluded - before.fallbackExcluded, 2n, 'both ends excluded');
      assert.equal(mid.redirectedMessages, before.redirectedMessages);
      await m.runCase(m.a, 'halfclose', 9504);
      assert.ok(m.dp.netnsCounters(m.cookieA)!.redirectedMessages > mid.redirectedMessages);
    } finally {
      m.dp.disable(m.cookieA);
    }
  });

  test('disable and enable mid-stream with a slow reader: nothing lost, order kept', async () => {
    m.dp.enable(m.cookieA);
    try {
      const p = m.startCase(m.a, 'toggle', 9505);
      await p.waitFor((o) => o.event === 'phase' && o.n === 0);
      const phase1 = m.dp.netnsCounters(m.cookieA)!;
      assert.ok(phase1.redirectedMessages > 0n, 'phase 1 was not redirected');
      m.dp.disable(m.cookieA, { keepCounters: true });
      p.child.kill('SIGUSR1');
      await p.waitFor((o) => o.event === 'phase' && o.n === 1);
      m.dp.enable(m.cookieA);
      p.child.kill('SIGUSR1');
      await p.finished();
      const r = p.objects.find((o) => o.case)?.result as { intact: boolean; sent: number; got: number };
      assert.equal(r.got, r.sent);
      assert.equal(r.intact, true, 'bytes reordered or corrupted');
      const end = m.dp.netnsCounters(m.cookieA)!;
      assert.ok(end.fallbackDisabled > phase1.fallbackDisabled, 'disable did not move the stream to TCP');
      // Once TCP carried a byte, that direction never returns to the redirect.
      assert.equal(end.redirectedMessages, phase1.redirectedMessages);
    } finally {
      m.dp.disable(m.cookieA);
    }
  });
});
