// A paired connection sends no packets, so the pod's conntrack entry for
// Istio's REDIRECT can expire while it lives. Its final FIN must still close
// both ends. The datapath keeps the entry alive with keepalive probes on the
// paired socket (keepaliveIdleSeconds below the conntrack timeout).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';
import { useMesh, APP_PORT } from './mesh.js';
import { kernelSkip, scaled } from './gate.js';
import { assertStreamsIntact, reports } from './streams.js';

const CT_TIMEOUT_S = 3;

describe('conntrack expiry on an idle paired connection', { skip: kernelSkip }, () => {
  const mesh = useMesh({ label: 'ct', crossPod: true, keepaliveIdleSeconds: 1 }, async (m) => {
      for (const p of [m.a, m.b]) await p.exec('sysctl', ['-qw', `net.netfilter.nf_conntrack_tcp_timeout_established=${CT_TIMEOUT_S}`]);
  });

  test(`idle for over ${CT_TIMEOUT_S} s, then closed: both ends see a clean close`, async () => {
    const srv = mesh().startPeer(mesh().b, ['server', '--listen', `0.0.0.0:${APP_PORT}`, '--bytes', '100000', '--end-after-peer', '1']);
    await srv.ready();
    await mesh().learnListener();
    const before = mesh().counters().socketsPaired;
    const cli = mesh().startPeer(mesh().a, ['client', '--connect', mesh().vip(), '--bytes', '100000', '--hold', '1', '--expect', '100000']);
    await cli.waitFor((o) => o.event === 'holding');
    const paired = mesh().counters().socketsPaired - before;
    assert.equal(paired, 6n, 'all three hops paired before going idle');
    // Time passing is what is under test: idle well past the conntrack timeout.
    await delay((CT_TIMEOUT_S * 2 + 2) * 1000);
    cli.child.kill('SIGUSR1');
    const closed = await Promise.race([cli.finished().then(() => true), delay(scaled(15_000)).then(() => false)]);
    assert.ok(closed, 'the close did not complete: the FIN was lost with the expired conntrack entry');
    await srv.waitFor((o) => o.role === 'server', 'server report');
    assertStreamsIntact(reports(cli.objects, 'client'), reports(srv.objects, 'server'), 1);
  });
});
