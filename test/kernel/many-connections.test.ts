// Connections that write the moment connect() returns, both ends at once:
// the client's first bytes race the server's registration. Every stream must
// arrive intact whether or not it was accelerated.
import { describe, test } from 'node:test';
import { useMesh, APP_PORT } from './mesh.js';
import { kernelSkip } from './gate.js';
import { assertStreamsIntact, reports } from './streams.js';

describe('many short connections', { skip: kernelSkip }, () => {
  const mesh = useMesh({ label: 'many', crossPod: true });

  const cases = [
    { name: 'in-pod loopback', listenPod: 'a' as const, listen: '127.0.0.1:9700', target: '127.0.0.1:9700', conns: 10_000 },
    { name: 'through both sidecars', listenPod: 'b' as const, listen: `0.0.0.0:${APP_PORT}`, target: 'vip', conns: 2_000 },
  ];
  for (const c of cases) {
    test(`${c.name}: ${c.conns} connections writing right after connect, both directions`, async () => {
      const before = mesh().counters();
      const srv = mesh().startPeer(c.listenPod === 'a' ? mesh().a : mesh().b, ['server', '--listen', c.listen, '--bytes', '3000', '--max-write', '1500']);
      await srv.ready();
      const cli = mesh().startPeer(mesh().a, ['client', '--connect', c.target === 'vip' ? mesh().vip() : c.target, '--bytes', '3000',
        '--conns', String(c.conns), '--concurrency', '64', '--max-write', '1500']);
      const lines = await cli.finished();
      await srv.waitFor(() => srv.objects.filter((x) => x.role === 'server').length >= c.conns, 'all server reports');
      assertStreamsIntact(reports(lines, 'client'), reports(srv.objects, 'server'), c.conns);
      const after = mesh().counters();
      const sockets = after.socketsRegistered - before.socketsRegistered;
      const paired = after.socketsPaired - before.socketsPaired;
      const missed = after.pairingMisses - before.pairingMisses;
      const tcpFirst = after.tcpMessages - before.tcpMessages;
      console.log(`${c.name}: ${c.conns} streams intact; ${sockets} sockets registered, ${paired} sent their first bytes redirected, `
        + `${missed} found no peer yet and stayed on TCP (${tcpFirst} messages over TCP)`);
      srv.child.kill('SIGKILL');
    });
  }
});
