// Every byte arrives, in order, whatever the write sizes: >= 1 GiB in total,
// writes of 1 B .. 4 MiB at random boundaries, both directions at once.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { useMesh, APP_PORT } from './mesh.js';
import { kernelSkip } from './gate.js';
import { assertStreamsIntact, reports } from './streams.js';

const MiB = 1 << 20;

describe('byte-stream integrity', { skip: kernelSkip }, () => {
  const mesh = useMesh({ label: 'integ', crossPod: true });

  const cases = [
    // Through both sidecars: three redirected hops per stream.
    { name: 'app -> sidecar -> sidecar -> app', pod: 'b' as const, listen: `0.0.0.0:${APP_PORT}`, target: 'vip', conns: 4, bytes: 64 * MiB },
    // One hop, the two apps in one pod over loopback.
    { name: 'in-pod loopback', pod: 'a' as const, listen: '127.0.0.1:9600', target: '127.0.0.1:9600', conns: 4, bytes: 64 * MiB },
  ];
  for (const c of cases) {
    test(`${c.name}: ${c.conns} x ${c.bytes / MiB} MiB each way, writes of 1 B .. 4 MiB`, async () => {
      const serverPod = c.pod === 'b' ? mesh().b : mesh().a;
      const before = mesh().counters().redirectedBytes;
      const srv = mesh().startPeer(serverPod, ['server', '--listen', c.listen, '--bytes', String(c.bytes), '--max-write', String(4 * MiB)]);
      await srv.ready();
      await mesh().learnListener(mesh().a, c.target === 'vip' ? mesh().vip() : c.target);
      const cli = mesh().startPeer(mesh().a, ['client', '--connect', c.target === 'vip' ? mesh().vip() : c.target, '--bytes', String(c.bytes),
        '--conns', String(c.conns), '--concurrency', String(c.conns), '--max-write', String(4 * MiB)]);
      const lines = await cli.finished();
      const servers = await Promise.all(Array.from({ length: c.conns }, (_, i) =>
        srv.waitFor((o) => o.role === 'server' && srv.objects.filter((x) => x.role === 'server').length > i)));
      assert.equal(servers.length, c.conns);
      assertStreamsIntact(reports(lines, 'client'), reports(srv.objects, 'server'), c.conns);
      const redirected = mesh().counters().redirectedBytes - before;
      assert.ok(redirected > 0n, 'nothing was redirected');
      console.log(`${c.name}: ${(2 * c.conns * c.bytes) / MiB} MiB checked, ${redirected / BigInt(MiB)} MiB redirected over all hops`);
      srv.child.kill('SIGKILL');
    });
  }
});
