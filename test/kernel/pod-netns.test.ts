// Finding pods' network namespaces from their UIDs, with real processes in
// real cgroup v2 directories named the way kubelet names them (cgroupfs and
// systemd drivers; containerd and CRI-O scopes): one pass over /proc for all
// pods, one handle per netns, the oldest process first, the pod's IP checked.
import { describe, test, before, after, mock } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { cgroup2Root } from '../../src/datapath/mounts.js';
import { destroyCgroup } from '../../src/datapath/cgroup.js';
import {
  PodNetnsScan, PodNotRunningError, PodNetnsMismatchError, checkPodUid, podUidOfCgroup,
} from '../../src/workloads/pod-netns.js';
import { CookieResolver } from '../../src/reconcile/reconciler.js';
import type { Workload } from '../../src/workloads/workload.js';
import { netnsCookieOfPath, netnsCookieOfPid } from '../../src/datapath/netns.js';
import { LineProcess } from '../../src/util/lines.js';
import { kernelSkip, assertKernelAccess } from './gate.js';

const uid = () => crypto.randomUUID();
const netnsIno = (pid: number) => fs.statSync(`/proc/${pid}/ns/net`, { bigint: true }).ino;
/** This process's open fds that are a handle on netns `ino`. */
const heldNetnsFds = (ino: bigint) => fs.readdirSync('/proc/self/fd').filter((fd) => {
  try { return fs.readlinkSync(`/proc/self/fd/${fd}`) === `net:[${ino}]`; } catch { return false; }
}).length;

describe('pod network namespaces from pod UIDs', { skip: kernelSkip }, () => {
  let top: string;
  const children: ChildProcess[] = [];
  const base = `198.18.${crypto.randomInt(1, 255)}`;
  let nextIp = 1;
  /** A test address for a pod, unique within this run. */
  const podIp = () => `${base}.${nextIp++}`;

  before(() => {
    assertKernelAccess();
    top = path.join(cgroup2Root(), `sak8s${crypto.randomBytes(3).toString('hex')}`);
    fs.mkdirSync(top);
  });
  after(async () => {
    for (const c of children) c.kill('SIGKILL');
    await destroyCgroup(top);
  });

  /**
   * A process inside cgroup `rel`: in a fresh netns holding `ip` (on lo), in
   * the netns of pid `join`, or in this test's own netns. Resolves with its
   * pid once it runs there.
   */
  async function podProcess(rel: string, netns: { ip: string } | { join: number } | 'own' = { ip: podIp() }): Promise<{ pid: number; child: ChildProcess }> {
    const dir = path.join(top, rel);
    fs.mkdirSync(dir, { recursive: true });
    const ready = 'echo ready; exec sleep 600';
    const cmd = netns === 'own' ? ready
      : 'join' in netns ? `exec nsenter -t ${netns.join} -n sh -c '${ready}'`
        : `exec unshare -n sh -c 'ip link set lo up && ip addr add ${netns.ip}/32 dev lo && ${ready}'`;
    const child = spawn('bash', ['-c', `echo $$ > "$0/cgroup.procs" && ${cmd}`, dir], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    await new LineProcess(child).waitForLine((l) => l === 'ready', 'pod process ready');
    return { pid: child.pid!, child };
  }

  const cgroupfs = (u: string) => `kubepods/burstable/pod${u}`;
  const layouts: [string, (u: string) => string][] = [
    ['cgroupfs driver, containerd', (u) => `${cgroupfs(u)}/${crypto.randomBytes(32).toString('hex')}`],
    ['systemd driver, containerd', (u) => `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${u.replace(/-/g, '_')}.slice/cri-containerd-${crypto.randomBytes(32).toString('hex')}.scope`],
    ['systemd driver, CRI-O, guaranteed QoS', (u) => `kubepods.slice/kubepods-pod${u.replace(/-/g, '_')}.slice/crio-${crypto.randomBytes(32).toString('hex')}.scope`],
    ['cgroupfs driver, besteffort', (u) => `kubepods/besteffort/pod${u}/${crypto.randomBytes(32).toString('hex')}`],
  ];
  for (const [name, layout] of layouts) {
    test(`${name}: finds the pod's netns`, async () => {
      const podUid = uid();
      const ip = podIp();
      const { pid } = await podProcess(layout(podUid), { ip });
      const scan = PodNetnsScan.scan([podUid]);
      try {
        const h = scan.netnsOf(podUid, [ip]);
        assert.equal(h.ino, netnsIno(pid));
        assert.equal(netnsCookieOfPath(h.path), netnsCookieOfPid(pid));
        assert.notEqual(netnsCookieOfPid(pid), netnsCookieOfPid(process.pid), 'the pod has its own netns');
      } finally {
        scan.close();
      }
    });
  }

  test('one pass over /proc for every pod of a reconcile', async () => {
    const pods = await Promise.all([1, 2, 3].map(async () => {
      const podUid = uid();
      const ip = podIp();
      const { pid } = await podProcess(`${cgroupfs(podUid)}/c`, { ip });
      return { podUid, ip, pid };
    }));
    const workloads: Workload[] = pods.map((p, i) => ({
      uid: p.podUid, name: `p${i}`, namespace: 'shop', annotations: {}, labels: {}, netns: { podUid: p.podUid, ips: [p.ip] }, source: 'kubernetes',
    }));
    const readdir = mock.method(fs, 'readdirSync');
    let resolver: CookieResolver | undefined;
    try {
      resolver = CookieResolver.forWorkloads(workloads, '/proc');
      const cookies = workloads.map((w) => resolver!.cookieOf(w));
      assert.deepEqual(cookies, pods.map((p) => netnsCookieOfPid(p.pid)));
      assert.equal(readdir.mock.calls.filter((c) => c.arguments[0] === '/proc').length, 1, 'one listing of /proc for three pods');
    } finally {
      readdir.mock.restore();
      resolver?.close();
    }
  });

  test('processes sharing a netns share one handle, released by close()', async () => {
    const podUid = uid();
    const ip = podIp();
    const sandbox = await podProcess(`${cgroupfs(podUid)}/sandbox`, { ip });
    await podProcess(`${cgroupfs(podUid)}/app`, { join: sandbox.pid });
    await podProcess(`${cgroupfs(podUid)}/sidecar`, { join: sandbox.pid });
    const ino = netnsIno(sandbox.pid);
    const scan = PodNetnsScan.scan([podUid]);
    try {
      assert.equal(scan.netnsCount, 1);
      assert.equal(heldNetnsFds(ino), 1, 'one fd for the pod\'s netns, whatever number of processes');
      assert.equal(scan.netnsOf(podUid, [ip]).ino, ino);
    } finally {
      scan.close();
    }
    assert.equal(heldNetnsFds(ino), 0);
  });

  test('the netns stays the one the pass found after its process is gone (no pid looked up again)', async () => {
    const podUid = uid();
    const ip = podIp();
    const { pid, child } = await podProcess(`${cgroupfs(podUid)}/c`, { ip });
    const cookie = netnsCookieOfPid(pid);
    const scan = PodNetnsScan.scan([podUid]);
    try {
      const h = scan.netnsOf(podUid, [ip]);
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGKILL');
      await exited;
      assert.equal(fs.existsSync(`/proc/${pid}`), false, 'the process is gone');
      assert.equal(netnsCookieOfPath(h.path), cookie);
    } finally {
      scan.close();
    }
  });

  test('a netns without any of the pod\'s IPs is never taken; none at all is a clear error', async () => {
    const podUid = uid();
    const ip = podIp();
    // The first process of the pod sits in a netns without the pod's IP
    // (the lowest pid, the oldest): the old lookup took it.
    const stray = await podProcess(`${cgroupfs(podUid)}/stray`, { ip: podIp() });
    const real = await podProcess(`${cgroupfs(podUid)}/c`, { ip });
    const scan = PodNetnsScan.scan([podUid]);
    try {
      assert.equal(scan.netnsOf(podUid, [ip]).ino, netnsIno(real.pid));
      assert.notEqual(netnsIno(stray.pid), netnsIno(real.pid));
      assert.throws(() => scan.netnsOf(podUid, ['203.0.113.77', '2001:db8::77']), (e: unknown) => e instanceof PodNetnsMismatchError
        && /holds its IPs 203\.0\.113\.77, 2001:db8::77/.test(e.message) && e.message.includes(`pid ${stray.pid}`));
      assert.throws(() => scan.netnsOf(podUid, []), (e: unknown) => e instanceof PodNotRunningError && /no pod IP known yet/.test((e as Error).message));
      assert.throws(() => scan.netnsOf(podUid, ['not-an-ip']), /not an IP address/);
    } finally {
      scan.close();
    }
  });

  test('of the pod\'s processes whose netns holds its IP, the oldest wins, not the lowest pid', async () => {
    // Two real network namespaces that both hold the pod's IP, seen through a
    // /proc whose pids and start times this test chooses (pids wrap around:
    // the younger process can have the lower pid).
    const podUid = uid();
    const ip = podIp();
    const older = await podProcess('decoy-older', { ip });
    const younger = await podProcess('decoy-younger', { ip });
    const fake = fs.mkdtempSync(path.join(os.tmpdir(), 'sa-fakeproc-'));
    try {
      const proc = (pid: number, realPid: number, startTime: number, cgroup: string) => {
        const d = path.join(fake, String(pid));
        fs.mkdirSync(path.join(d, 'ns'), { recursive: true });
        fs.writeFileSync(path.join(d, 'cgroup'), `0::${cgroup}\n`);
        fs.writeFileSync(path.join(d, 'stat'), `${pid} (sleep) S 1 ${pid} ${pid} 0 -1 4194560 ${Array.from({ length: 12 }, () => '0').join(' ')} ${startTime} 0 0\n`);
        fs.symlinkSync(`/proc/${realPid}/ns/net`, path.join(d, 'ns/net'));
      };
      proc(1, 1, 1, '/init.scope');
      proc(100, younger.pid, 9000, `/kubepods/burstable/pod${podUid}/app`);
      proc(200, older.pid, 5000, `/kubepods/burstable/pod${podUid}/sandbox`);
      const scan = PodNetnsScan.scan([podUid], { procRoot: fake });
      try {
        assert.equal(scan.netnsOf(podUid, [ip]).ino, netnsIno(older.pid));
      } finally {
        scan.close();
      }
    } finally {
      fs.rmSync(fake, { recursive: true, force: true });
    }
  });

  test('a pod not running yet: a clear error, no guess', () => {
    const podUid = uid();
    fs.mkdirSync(path.join(top, `kubepods/burstable/pod${podUid}`), { recursive: true });
    const scan = PodNetnsScan.scan([podUid]);
    try {
      assert.throws(() => scan.netnsOf(podUid, ['10.0.0.1']), (e: unknown) => e instanceof PodNotRunningError && /not started yet, or gone/.test((e as Error).message));
    } finally {
      scan.close();
    }
  });

  test("a process of the pod in the host's netns is never taken for the pod's", async () => {
    const podUid = uid();
    await podProcess(`${cgroupfs(podUid)}/hostnet`, 'own');
    // Here the "host" is this test's own netns (in a DaemonSet: pid 1 of the host's /proc).
    const scan = PodNetnsScan.scan([podUid], { hostNetnsIno: netnsIno(process.pid) });
    try {
      assert.equal(scan.netnsCount, 0);
      assert.throws(() => scan.netnsOf(podUid, ['10.0.0.1']), PodNotRunningError);
    } finally {
      scan.close();
    }
  });

  test('another pod whose UID shares a prefix is not matched', async () => {
    const a = uid();
    const b = `${a.slice(0, 30)}${a.slice(30).split('').reverse().join('')}`;
    await podProcess(`${cgroupfs(a)}/c1`);
    const scan = PodNetnsScan.scan([b]);
    try {
      assert.equal(scan.netnsCount, 0);
    } finally {
      scan.close();
    }
    assert.throws(() => checkPodUid('../etc'), /not a pod UID/);
    assert.equal(podUidOfCgroup(`/kubepods/pod${a}x/c`), undefined);
  });
});
