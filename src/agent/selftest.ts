// The agent's self-test: before serving, prove on this kernel, in a private
// network namespace, that a paired connection behaves (selftest-peer.ts) and
// that it really was paired, bounded and left blocking readers alone (the
// datapath's own counters). What changes between kernels and stable updates
// decides the mode: a failed required check refuses to start; a failed
// application check (FIONREAD, MSG_PEEK) pairs only the sidecar's sockets.
import crypto from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import fs from 'node:fs';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Datapath } from '../datapath/datapath.js';
import { netnsCookieOfPath } from '../datapath/netns.js';
import { cgroupDirOf, cgroupWithin } from '../datapath/mounts.js';
import { destroyCgroup } from '../datapath/cgroup.js';
import { run } from '../util/exec.js';
import { LineProcess } from '../util/lines.js';
import type { Check } from './selftest-peer.js';
import { kernelSupportCheck } from './kernel-support.js';

export type SelfTestCheck = Check;
export type SelfTestMode = 'full' | 'sidecar-only' | 'refuse';
export interface SelfTestResult {
  ok: boolean;
  mode: SelfTestMode;
  checks: SelfTestCheck[];
  /** The cgroup (as /proc/<pid>/cgroup shows it) the peer ran in; null when it reported none. */
  peerCgroup: string | null;
}

const peerScript = path.join(path.dirname(fileURLToPath(import.meta.url)), 'selftest-peer.js');

/** Answers the peer's requests to switch its netns between redirect and TCP. */
class PeerDriver extends LineProcess {
  constructor(child: ChildProcess, private readonly onNeed: (what: string) => void) {
    super(child);
  }

  protected override onLine(line: string): void {
    let msg: { need?: string } = {};
    try { msg = JSON.parse(line) as { need?: string }; } catch { return; }
    if (!msg.need) return;
    this.onNeed(msg.need);
    this.child.stdin?.write('ok\n');
  }
}

export function selfTestMode(checks: SelfTestCheck[]): SelfTestMode {
  if (checks.length === 0 || checks.some((c) => !c.ok && c.kind === 'required')) return 'refuse';
  return checks.some((c) => !c.ok && c.kind === 'application') ? 'sidecar-only' : 'full';
}

export async function runSelfTest(dp: Datapath, timeoutMs = 30_000): Promise<SelfTestResult> {
  const ns = `sa-selftest-${crypto.randomBytes(3).toString('hex')}`;
  await run('ip', ['netns', 'add', ns]);
  let cookie: bigint | undefined;
  let leaf: string | undefined;
  const restore = dp.config();
  try {
    await run('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
    cookie = netnsCookieOfPath(`/run/netns/${ns}`);
    const netns = cookie;
    // The peer plays an application: its sockets must be eligible here.
    dp.setConfig({ ...restore, sidecarOnly: false });
    dp.enable(netns);
    const child = spawnPeer(dp.cgroupPath, `/run/netns/${ns}`, (dir) => { leaf = dir; });
    const peer = new PeerDriver(child, (what) => {
      if (what === 'tcp') dp.disable(netns, { keepCounters: true });
      else dp.enable(netns);
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    let lines: string[];
    try {
      lines = await peer.done();
    } finally {
      clearTimeout(timer);
    }
    const last = lines.filter((l) => l.startsWith('{"checks"')).at(-1) ?? '{"checks":[]}';
    const report = JSON.parse(last) as { checks: SelfTestCheck[]; cgroup?: string | null };
    const checks = report.checks;
    const c = dp.netnsCounters(netns);
    checks.push({ name: 'paired', ok: !!c && c.socketsPaired >= 4n && c.redirectedBytes > 0n,
      detail: `${c?.socketsPaired ?? 0n} sockets paired, ${c?.redirectedBytes ?? 0n} bytes redirected`, kind: 'required' });
    checks.push({ name: 'backpressure-bound', ok: !!c && c.fallbackBackpressure >= 1n,
      detail: `${c?.fallbackBackpressure ?? 0n} backpressure fallbacks`, kind: 'required' });
    checks.push({ name: 'blocking-reader-left-alone', ok: !!c && c.fallbackBlocking >= 1n,
      detail: `${c?.fallbackBlocking ?? 0n} blocking sockets left alone (a blocking reader on a paired socket gets EAGAIN where TCP waits)`, kind: 'required' });
    checks.push(kernelSupportCheck(os.release()));
    const mode = selfTestMode(checks);
    return { ok: mode !== 'refuse', mode, checks, peerCgroup: report.cgroup ?? null };
  } finally {
    dp.setConfig(restore);
    if (cookie !== undefined) dp.disable(cookie);
    await run('ip', ['netns', 'del', ns], { allowFail: true });
    if (leaf) await destroyCgroup(leaf);
  }
}

/**
 * Starts the peer in the self-test's netns. The programs see a socket of any
 * cgroup at or below the one they are linked to, so when the agent runs there
 * (always, linked at the host's root) the peer stays in the agent's own cgroup:
 * nothing is moved. Only a datapath linked elsewhere (the tests' and the
 * kernel matrix's own cgroups) needs the peer in a fresh leaf below it,
 * created here and removed after (`onLeaf`); never the linked cgroup itself.
 */
function spawnPeer(attachCgroup: string, netnsPath: string, onLeaf: (dir: string) => void): ChildProcess {
  const argv = [`--net=${netnsPath}`, '--', process.execPath, peerScript];
  const own = cgroupDirOf('self');
  if (own !== undefined && cgroupWithin(own, attachCgroup)) return spawn('nsenter', argv, { stdio: ['pipe', 'pipe', 'pipe'] });
  const leaf = path.join(attachCgroup, `sa-selftest-${crypto.randomBytes(3).toString('hex')}`);
  fs.mkdirSync(leaf);
  onLeaf(leaf);
  return spawn('bash', ['-c', 'echo $$ > "$0/cgroup.procs" && exec nsenter "$@"', leaf, ...argv], { stdio: ['pipe', 'pipe', 'pipe'] });
}
