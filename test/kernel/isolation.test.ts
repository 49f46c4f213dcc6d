// Only enabled workloads are touched, and nothing crosses between pods.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { useMesh, PeerProcess, caseScript, movedCounters } from './mesh.js';
import { countersDelta } from '../../src/datapath/layout.js';
import { kernelSkip } from './gate.js';
import { sockHashKeys, describeKey, type ConnKey } from './keys.js';

describe('isolation', { skip: kernelSkip }, () => {
  const mesh = useMesh({ label: 'iso', enable: false });

  test('two pods using the same 127.0.0.1 4-tuple at once: nothing crosses', async () => {
    mesh().enableAll();
    try {
      const before = mesh().counters();
      const pa = mesh().startCase(mesh().a, 'fixed-tuple', 9500, { CASE_TAG: 'AAAA' });
      const pb = mesh().startCase(mesh().b, 'fixed-tuple', 9500, { CASE_TAG: 'bbbb' });
      await Promise.all([pa.waitFor((o) => o.event === 'connected'), pb.waitFor((o) => o.event === 'connected')]);
      // Both connections exist now, with identical addresses and ports.
      pa.child.kill('SIGUSR1');
      pb.child.kill('SIGUSR1');
      await Promise.all([pa, pb].map((p) => p.finished().catch(() => undefined)));
      const delta = countersDelta(mesh().counters(), before);
      for (const p of [pa, pb]) {
        assert.deepEqual(p.objects.find((o) => o.case)?.result, { serverGotOwn: true, clientGotOwn: true },
          `pod ${p === pa ? 'a' : 'b'}: ${p.errorOutput}; counters: ${movedCounters(delta)}`);
      }
      assert.equal(delta.socketsPaired, 4n, `both pairs were accelerated: ${movedCounters(delta)}`);
    } finally {
      mesh().dp.disable(mesh().cookieA);
      mesh().dp.disable(mesh().cookieB);
    }
  });

  test('two pods using the same [::6] 4-tuple and sequence numbers at once (cross-pod on): each pod\'s bytes reach only its own sockets', async () => {
    // Istio's IPv6 inbound passthrough source is ::6 in every pod. Both pods
    // also get the same server address and the same handshake sequence
    // numbers (see sockcases.py same-v6-tuple), so only the key's scope tells
    // the two connections apart. Pod b's client reads blocking and is never
    // registered; its server is, first. Pod a's two ends come second: with a
    // node-wide key its client would find pod b's server as its peer.
    const server6 = 'fd00:5ca1:e::6';
    const m = mesh();
    m.enableAll();
    m.dp.setConfig({ crossPod: true, keepaliveIdleSeconds: 0 });
    const pods = [m.a, m.b];
    try {
      for (const pod of pods) {
        await pod.exec('ip', ['-6', 'addr', 'add', `${server6}/128`, 'dev', 'lo', 'nodad']);
        await pod.exec('sysctl', ['-qw', 'net.ipv4.tcp_syncookies=2']);
      }
      // The server's sequence number is a SYN cookie, which also counts the
      // minute: when pod a connects in the minute after pod b did, the two
      // connections differ after all, and both are made again (on another
      // port, the old 4-tuple lingering in TIME_WAIT).
      let pa: PeerProcess | undefined;
      let pb: PeerProcess | undefined;
      let clients: ConnKey[] = [];
      let before = m.counters();
      let beforeA = m.dp.netnsCounters(m.cookieA)!;
      for (let attempt = 0; attempt < 3; attempt++) {
        await pa?.stop();
        await pb?.stop();
        before = m.counters();
        beforeA = m.dp.netnsCounters(m.cookieA)!;
        const port = 9510 + attempt;
        pb = m.startCase(m.b, 'same-v6-tuple', port, { CASE_TAG: 'bbbb', CASE_SERVER6: server6, CASE_BLOCKING: '1' });
        await pb.waitFor((o) => o.event === 'connected');
        pa = m.startCase(m.a, 'same-v6-tuple', port, { CASE_TAG: 'AAAA', CASE_SERVER6: server6 });
        await pa.waitFor((o) => o.event === 'connected');
        // Both connections are live now: same addresses, ports and (unless a minute went by) sequence numbers.
        clients = [...sockHashKeys(m)].filter((k) => k.clientIp === '::6' && k.clientPort === 40000);
        if (new Set(clients.map((k) => `${k.clientSeq}/${k.serverSeq}`)).size === 1) break;
      }
      assert.ok(pa && pb);
      assert.equal(new Set(clients.map((k) => `${k.clientSeq}/${k.serverSeq}`)).size, 1, `the two pods' connections share their sequence numbers: ${clients.map(describeKey).join('; ')}`);
      pa.child.kill('SIGUSR1');
      pb.child.kill('SIGUSR1');
      for (const p of [pa, pb]) {
        await p.finished();
        assert.deepEqual(p.objects.find((o) => o.case)?.result, { serverGotOwn: true, clientGotOwn: true }, `pod ${p === pa ? 'a' : 'b'}: ${p.errorOutput}`);
      }
      const after = m.counters();
      assert.equal(after.fallbackKeyConflict - before.fallbackKeyConflict, 0n, 'a key was taken by the other pod\'s connection');
      assert.equal(m.dp.netnsCounters(m.cookieA)!.socketsPaired - beforeA.socketsPaired, 2n, 'pod a\'s connection was paired');
      assert.equal(clients.length, 3, 'pod a\'s two ends and pod b\'s server were registered, each under a key of its own');
    } finally {
      m.dp.setConfig({ crossPod: false, keepaliveIdleSeconds: 0 });
      for (const pod of pods) {
        await pod.exec('sysctl', ['-qw', 'net.ipv4.tcp_syncookies=1']).catch(() => {});
        await pod.exec('ip', ['-6', 'addr', 'del', `${server6}/128`, 'dev', 'lo']).catch(() => {});
      }
      m.dp.disable(m.cookieA);
      m.dp.disable(m.cookieB);
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
      // Once TCP carried a byte, that direction comes back to the redirect only
      // as a counted return (after its reader read every TCP byte, I2): whether
      // it does depends on how fast the reader caught up, the order never.
      if (end.redirectedMessages > phase1.redirectedMessages) {
        assert.ok(end.directionsResumed > phase1.directionsResumed, 'redirected again after TCP without a counted return');
      }
    } finally {
      mesh().dp.disable(mesh().cookieA);
    }
  });
});
