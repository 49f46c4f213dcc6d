// The datapath outlives the process that loaded it: a second open adopts the
// pins (hitless restart), and uninstall detaches while paired connections go
// on working.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { useMesh } from './mesh.js';
import { Datapath } from '../../src/datapath/datapath.js';
import { kernelSkip } from './gate.js';

describe('datapath lifecycle', { skip: kernelSkip }, () => {
  const mesh = useMesh({ label: 'life', enable: false });

  test('the kernel reports the three programs attached', () => {
    const a = mesh().dp.attachment();
    assert.ok(a.sockopsLinked, 'sockops not linked to the cgroup');
    assert.ok(a.skMsgAttached, 'sk_msg not attached to the sockhash');
    assert.ok(a.ingressLinked, 'the ingress gate (I7) not linked to the cgroup');
  });

  test('a second open adopts the pins: state and counters carry over, a live stream goes on', async () => {
    mesh().dp.enable(mesh().cookieA, { excludePorts: [1234], crossPod: false, addressesKnown: true, outboundDirect: true });
    const p = mesh().startCase(mesh().a, 'toggle', 9800);
    await p.waitFor((o) => o.event === 'phase' && o.n === 0);
    const before = mesh().dp.counters();
    // The "agent" goes away without uninstalling, as on SIGTERM or kill -9.
    const { pinRoot, cgroupDir } = { pinRoot: mesh().pinRoot, cgroupDir: mesh().topo.cgroupDir };
    mesh().dp.close();
    const again = Datapath.open({ cgroupPath: cgroupDir, pinRoot });
    mesh().dp = again;
    assert.equal(again.adopted, true);
    assert.deepEqual(again.enabledNetns().get(mesh().cookieA), { enabled: true, excludePorts: [1234], crossPod: false, addressesKnown: true, outboundDirect: true, inboundDirect: false });
    p.child.kill('SIGUSR1');
    await p.waitFor((o) => o.event === 'phase' && o.n === 1);
    p.child.kill('SIGUSR1');
    await p.finished();
    assert.equal((p.objects.find((o) => o.case)?.result as { intact: boolean }).intact, true);
    const after = again.counters();
    assert.ok(after.redirectedMessages > before.redirectedMessages, 'counters did not keep growing after adoption');
    mesh().dp.disable(mesh().cookieA);
  });

  test('uninstall during a transfer: the paired connection finishes intact, nothing stays attached or pinned', async () => {
    mesh().dp.enable(mesh().cookieA);
    const p = mesh().startCase(mesh().a, 'toggle', 9801);
    await p.waitFor((o) => o.event === 'phase' && o.n === 0);
    const ids = mesh().dp.attachment().ourProgIds;
    const pinDir = mesh().dp.pinDir;
    const cg = mesh().topo.cgroupDir;
    mesh().dp.uninstall();
    const fresh = Datapath.open({ cgroupPath: cg, pinRoot: mesh().pinRoot });
    mesh().dp = fresh;
    assert.equal(fresh.adopted, false, 'pins of the uninstalled generation survived');
    assert.ok(!fresh.attachment().cgroupSockopsProgIds.includes(ids.sockops), 'old sockops program still linked');
    assert.ok(!fresh.attachment().cgroupIngressProgIds.includes(ids.ingress), 'old ingress gate still linked');
    assert.ok(fs.existsSync(fresh.pinDir));
    assert.equal(pinDir, fresh.pinDir, 'same build, same generation directory');
    p.child.kill('SIGUSR1');
    await p.waitFor((o) => o.event === 'phase' && o.n === 1);
    p.child.kill('SIGUSR1');
    await p.finished();
    const r = p.objects.find((o) => o.case)?.result as { intact: boolean; sent: number; got: number };
    assert.equal(r.got, r.sent);
    assert.equal(r.intact, true);
  });
});
