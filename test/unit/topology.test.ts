// Pure parts of the datapath and topology: mount discovery, Istio's rules,
// the sidecar's configuration.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseMounts, cgroup2Root, bpffsContaining, MountError } from '../../src/datapath/mounts.js';
import { istioCaptureRules } from '../../lab/topology/istio-rules.js';
import { sidecarMaxconn, haproxyConfig } from '../../lab/topology/haproxy.js';

const HYBRID = `tmpfs /sys/fs/cgroup tmpfs rw 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0
bpf /sys/fs/bpf bpf rw 0 0
none /mnt/with\\040space cgroup2 rw 0 0
`;

test('the cgroup v2 root is found where the mount table says, hybrid layouts included', () => {
  assert.equal(cgroup2Root(parseMounts(HYBRID)), '/sys/fs/cgroup/unified');
  assert.equal(parseMounts(HYBRID)[4]!.target, '/mnt/with space');
  assert.throws(() => cgroup2Root(parseMounts('tmpfs /sys/fs/cgroup tmpfs rw 0 0\n')), MountError);
});

test('a pin directory must lie on bpffs', () => {
  const m = parseMounts(HYBRID);
  assert.equal(bpffsContaining('/sys/fs/bpf/sidecar-accel', m), '/sys/fs/bpf');
  assert.equal(bpffsContaining('/sys/fs/bpfx/y', m), undefined);
  assert.equal(bpffsContaining('/sys/fs/cgroup/unified/x', m), undefined);
});

test("Istio's capture rules are the injector's, per family", () => {
  const v4 = istioCaptureRules(4);
  for (const rule of [
    '-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001',
    '-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006',
    '-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN',
    '-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT',
    '-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN',
  ]) assert.ok(v4.split('\n').includes(rule), rule);
  // The final catch-all must come after every RETURN.
  const lines = v4.split('\n');
  assert.ok(lines.indexOf('-A ISTIO_OUTPUT -j ISTIO_REDIRECT') > lines.indexOf('-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN'));
  const v6 = istioCaptureRules(6);
  assert.ok(v6.includes('-s ::6/128 -j RETURN') && v6.includes('-d ::1/128 -j RETURN') && !v6.includes('127.0.0'));
});

test('the sidecar config never splices, sends inbound from 127.0.0.6 and drops no privileges (it starts as 1337)', () => {
  const cfg = haproxyConfig({ upstream4: '10.0.0.3:8080', appPort: 8080 }, { ip4: '10.0.0.2', ip6: 'fd00::2' }, '/tmp/p');
  assert.ok(!/^\s*(uid|gid|user|group)\s/m.test(cfg), 'HAProxy must not bind as root and then drop: its listeners would belong to root');
  for (const line of ['  nosplice', '  bind 0.0.0.0:15001', '  bind 0.0.0.0:15006',
    '  server app 10.0.0.2:8080 source 127.0.0.6', '  server app [fd00::2]:8080 source [::6]']) {
    assert.ok(cfg.split('\n').includes(line), line);
  }
  assert.ok(!/option splice/.test(cfg));
});

test('a sidecar holds as many connections as its inherited open-file hard limit allows (it cannot raise it)', () => {
  const limits = (hard: string) => `Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 ${hard}                files\n`;
  assert.equal(sidecarMaxconn(limits('4096')), 2016);
  assert.equal(sidecarMaxconn(limits('1048576')), 8000);
  assert.equal(sidecarMaxconn(limits('unlimited')), 8000);
  assert.equal(sidecarMaxconn(limits('100')), 64);
});
