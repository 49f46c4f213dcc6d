// Only enabled workloads are touched, and nothing crosses between pods.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { useMesh, PeerProcess, caseScript } from './mesh.js';
import { kernelSkip } from './gate.js';

describe('isolation', { skip: kernelSkip }, () => {
  const mesh = useMesh({ label: 'iso', enable: false });

  test('two pods using the same 127.0.0.1 4-tuple at once: nothing crosses', async () => {
    mesh().enableAll();
    try {
      const before = mesh().counters().socketsPaired;
      const pa = mesh().startCase(mesh().a, 'fixed-tuple', 9500, { CASE_TAG: 'AAAA' });
      const pb = mesh().startCase(mesh().b, 'fixed-tuple', 9500, { CASE_TAG: 'bbbb' });
      await Promise.all([pa.waitFor((o) => o.event === 'connected'), pb.waitFor((o) => o.event === 'connected')]);
      // Both connections exist now, with identical addresses and ports.
      pa.child.kill('SIGUSR1');
      pb.child.kill('SIGUSR1');
      for (const p of [pa, pb]) {
        await p.finished();
        assert.deepEqual(p.objects.find((o) => o.case)?.result, { serverGotOwn: true, clientGotOwn: true });
      }
      assert.equal(mesh().counters().socketsPaired - before, 4n, 'both pairs were accelerated');
    } finally {
      mesh().dp.disable(mesh().cookieA);
      mesh().dp.disable(mesh().cookieB);
    }
  });

  test('a disabled pod is never paired', async () => {
    const before = mesh().counters();
    const r = await mesh().runCase(mesh().b, 'halfclose', 9501);
    assert.equal(r.serverGotAll, true);
    const after = mesh().counters();
    assert.equal(after.socketsSeen, before.socketsSeen, 'a socket of a disabled netns was looked at');
    assert.equal(after.redirectedMessages, before.redirectedMessages);
  });

  test('a process outside any pod is never paired', async () => {
    mesh().enableAll();
    try {
      const before = mesh().counters();
      // In the attach cgroup but in the host's network namespace.
      const child = spawn('bash', ['-c', 'echo $$ > "$0/cgroup.procs" && exec python3 "$1" halfclose 9502',
        mesh().topo.cgroupDir, caseScript], { stdio: ['ignore', 'pipe', 'pipe'] });
      const p = new PeerProcess(child);
      await p.finished();
      assert.equal((p.objects[0]?.result as { serverGotAll: boolean }).serverGotAll, true);
      const after = mesh().counters();
      assert.equal(after.socketsSeen, before.socketsSeen);
      assert.equal(after.redirectedMessages, before.redirectedMessages);
    } finally {
      mesh().dp.disable(mesh().cookieA);
      mesh().dp.disable(mesh().cookieB);
    }
  });

  test('an excluded port is never paired, other ports of the pod are', async () => {
    mesh().dp.enable(mesh().cookieA, { excludePorts: [9503] });
    try {
      const before = mesh().dp.netnsCounters(mesh().cookieA)!;
      await mesh().runCase(mesh().a, 'halfclose', 9503);
      const mid = mesh().dp.netnsCounters(mesh().cookieA)!;
      // Two connections: the listener's probe and the case's; both ends of each.
      assert.equal(mid.fallbackExcluded - before.fallbackExcluded, 4n, 'both ends excluded');
      assert.equal(mid.redirectedMessages, before.redirectedMessages);
      await mesh().runCase(mesh().a, 'halfclose', 9504);
      assert.ok(mesh().dp.netnsCounters(mesh().cookieA)!.redirectedMessages > mid.redirectedMessages);
    } finally {
      mesh().dp.disable(mesh().cookieA);
    }
  });

  test('disable and enable mid-stream with a slow reader: nothing lost, order kept', async () => {
    mesh().dp.enable(mesh().cookieA);
    try {
      const p = mesh().startCase(mesh().a, 'toggle', 9505);
      await p.waitFor((o) => o.event === 'phase' && o.n === 0);
      const phase1 = mesh().dp.netnsCounters(mesh().cookieA)!;
      assert.ok(phase1.redirectedMessages > 0n, 'phase 1 was not redirected');
      mesh().dp.disable(mesh().cookieA, { keepCounters: true });
      p.child.kill('SIGUSR1');
      await p.waitFor((o) => o.event === 'phase' && o.n === 1);
      mesh().dp.enable(mesh().cookieA);
      p.child.kill('SIGUSR1');
      await p.finished();
      const r = p.objects.find((o) => o.case)?.result as { intact: boolean; sent: number; got: number };
      assert.equal(r.got, r.sent);
      assert.equal(r.intact, true, 'bytes reordered or corrupted');
      const end = mesh().dp.netnsCounters(mesh().cookieA)!;
      assert.ok(end.fallbackDisabled > phase1.fallbackDisabled, 'disable did not move the stream to TCP');
      // Once TCP carried a byte, that direction never returns to the redirect.
      assert.equal(end.redirectedMessages, phase1.redirectedMessages);
    } finally {
      mesh().dp.disable(mesh().cookieA);
    }
  });
});
