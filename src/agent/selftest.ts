// The agent's self-test: before serving, prove on this kernel, in a private
// network namespace, that a paired connection behaves (selftest-peer.ts) and
// that it really was paired and bounded (the datapath's own counters).
import crypto from 'node:crypto';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Datapath } from '../datapath/datapath.js';
import { netnsCookieOfPath } from '../datapath/netns.js';
import { run } from '../util/exec.js';
import { LineProcess } from '../util/lines.js';

export interface SelfTestCheck { name: string; ok: boolean; detail: string }
export interface SelfTestResult { ok: boolean; checks: SelfTestCheck[] }

const peerScript = path.join(path.dirname(fileURLToPath(import.meta.url)), 'selftest-peer.js');

export async function runSelfTest(dp: Datapath, timeoutMs = 30_000): Promise<SelfTestResult> {
  const ns = `sa-selftest-${crypto.randomBytes(3).toString('hex')}`;
  await run('ip', ['netns', 'add', ns]);
  let cookie: bigint | undefined;
  try {
    await run('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
    cookie = netnsCookieOfPath(`/run/netns/${ns}`);
    dp.enable(cookie);
    // Into the attach cgroup first, so the program sees the peer's sockets.
    const child = spawn('bash', ['-c', 'echo $$ > "$0/cgroup.procs" && exec nsenter --net="$1" -- "${@:2}"',
      dp.cgroupPath, `/run/netns/${ns}`, process.execPath, peerScript], { stdio: ['ignore', 'pipe', 'pipe'] });
    const peer = new LineProcess(child);
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    let lines: string[];
    try {
      lines = await peer.done();
    } finally {
      clearTimeout(timer);
    }
    const checks = (JSON.parse(lines.at(-1) ?? '{"checks":[]}') as { checks: SelfTestCheck[] }).checks;
    const c = dp.netnsCounters(cookie);
    checks.push({ name: 'paired', ok: !!c && c.socketsPaired >= 4n && c.redirectedBytes > 0n,
      detail: `${c?.socketsPaired ?? 0n} sockets paired, ${c?.redirectedBytes ?? 0n} bytes redirected` });
    checks.push({ name: 'backpressure-bound', ok: !!c && c.fallbackBackpressure >= 1n,
      detail: `${c?.fallbackBackpressure ?? 0n} backpressure fallbacks` });
    return { ok: checks.length > 0 && checks.every((x) => x.ok), checks };
  } finally {
    if (cookie !== undefined) dp.disable(cookie);
    await run('ip', ['netns', 'del', ns], { allowFail: true });
  }
}
