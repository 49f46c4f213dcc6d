// Finding a pod's network namespace from its UID, with real processes in
// real cgroup v2 directories named the way kubelet names them (cgroupfs and
// systemd drivers; containerd and CRI-O scopes).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { cgroup2Root } from '../../src/datapath/mounts.js';
import { destroyCgroup } from '../../src/topology/cgroup.js';
import { findPodProcess, podNetnsPath, PodNotRunningError, podCgroupMatcher } from '../../src/workloads/pod-netns.js';
import { netnsCookieOfPath, netnsCookieOfPid } from '../../src/datapath/netns.js';
import { LineProcess } from '../../src/util/lines.js';
import { kernelSkip, assertKernelAccess } from './gate.js';

const uid = () => crypto.randomUUID();

describe('pod network namespace from the pod UID', { skip: kernelSkip }, () => {
  let top: string;
  const children: ChildProcess[] = [];
  before(() => {
    assertKernelAccess();
    top = path.join(cgroup2Root(), `sak8s${crypto.randomBytes(3).toString('hex')}`);
    fs.mkdirSync(top);
  });
  after(async () => {
    for (const c of children) c.kill('SIGKILL');
    await destroyCgroup(top);
  });

  /** A process in a fresh netns (unshare -n) inside cgroup `rel`; resolves with its pid once it runs there. */
  async function podProcess(rel: string, ownNetns = true): Promise<number> {
    const dir = path.join(top, rel);
    fs.mkdirSync(dir, { recursive: true });
    const cmd = ownNetns ? 'exec unshare -n sh -c "echo ready; exec sleep 600"' : 'echo ready; exec sleep 600';
    const child = spawn('bash', ['-c', `echo $$ > "$0/cgroup.procs" && ${cmd}`, dir], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    await new LineProcess(child).waitForLine((l) => l === 'ready', 'pod process ready');
    return child.pid!;
  }

  const layouts: [string, (u: string) => string][] = [
    ['cgroupfs driver, containerd', (u) => `kubepods/burstable/pod${u}/${crypto.randomBytes(32).toString('hex')}`],
    ['systemd driver, containerd', (u) => `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${u.replace(/-/g, '_')}.slice/cri-containerd-${crypto.randomBytes(32).toString('hex')}.scope`],
    ['systemd driver, CRI-O, guaranteed QoS', (u) => `kubepods.slice/kubepods-pod${u.replace(/-/g, '_')}.slice/crio-${crypto.randomBytes(32).toString('hex')}.scope`],
    ['cgroupfs driver, besteffort', (u) => `kubepods/besteffort/pod${u}/${crypto.randomBytes(32).toString('hex')}`],
  ];
  for (const [name, layout] of layouts) {
    test(`${name}: finds the pod's process and its netns`, async () => {
      const podUid = uid();
      const pid = await podProcess(layout(podUid));
      assert.equal(findPodProcess(podUid), pid);
      assert.equal(netnsCookieOfPath(podNetnsPath(podUid)), netnsCookieOfPid(pid));
      assert.notEqual(netnsCookieOfPid(pid), netnsCookieOfPid(process.pid), 'the pod has its own netns');
    });
  }

  test('a pod that is not running yet: a clear error, no guess', () => {
    const podUid = uid();
    fs.mkdirSync(path.join(top, `kubepods/burstable/pod${podUid}`), { recursive: true });
    assert.throws(() => podNetnsPath(podUid), (e: unknown) => e instanceof PodNotRunningError && /not started yet, or gone/.test((e as Error).message));
  });

  test("a process of the pod in the host's netns is never taken for the pod's", async () => {
    const podUid = uid();
    await podProcess(`kubepods/burstable/pod${podUid}/hostnet`, false);
    // Here the "host" is this test's own netns (in a DaemonSet: pid 1 of the host's /proc).
    assert.equal(findPodProcess(podUid, '/proc', fs.readlinkSync('/proc/self/ns/net')), undefined);
  });

  test('another pod whose UID shares a prefix is not matched', async () => {
    const a = uid();
    const b = `${a.slice(0, 30)}${a.slice(30).split('').reverse().join('')}`;
    await podProcess(`kubepods/burstable/pod${a}/c1`);
    assert.equal(findPodProcess(b), undefined);
    assert.throws(() => podCgroupMatcher('../etc'), /not a pod UID/);
  });
});
