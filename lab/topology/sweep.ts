// Removes what topologies of dead processes left behind (a run killed with
// SIGKILL never reaches its finally): their cgroups and processes, network
// namespaces, bpffs pins and temp files. A topology is identified by its
// prefix; its owner's pid is in <tmp>/<prefix>-*/owner.pid.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { run } from '../../src/util/exec.js';
import { cgroup2Root } from '../../src/datapath/mounts.js';
import { destroyCgroup } from '../../src/datapath/cgroup.js';

export const PREFIX_PATTERN = /^(sa[a-z0-9]{0,8}[0-9a-f]{6})-[A-Za-z0-9]{6}$/;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Prefixes of topologies whose owner process is gone. */
export function staleTopologies(tmp = os.tmpdir()): { prefix: string; dir: string }[] {
  const out: { prefix: string; dir: string }[] = [];
  for (const name of fs.readdirSync(tmp)) {
    const m = PREFIX_PATTERN.exec(name);
    if (!m) continue;
    const dir = path.join(tmp, name);
    let pid: number;
    try { pid = Number(fs.readFileSync(path.join(dir, 'owner.pid'), 'utf8')); } catch { continue; }
    if (Number.isInteger(pid) && pid > 0 && !alive(pid)) out.push({ prefix: m[1]!, dir });
  }
  return out;
}

/** Tears down every stale topology; returns the prefixes removed. */
export async function sweepStaleTopologies(): Promise<string[]> {
  const stale = staleTopologies();
  if (stale.length === 0) return [];
  const { stdout } = await run('ip', ['netns', 'list']);
  const namespaces = stdout.split('\n').map((l) => l.split(' ')[0]!).filter(Boolean);
  for (const { prefix, dir } of stale) {
    await destroyCgroup(path.join(cgroup2Root(), prefix));
    for (const ns of namespaces.filter((n) => n.startsWith(`${prefix}-`))) await run('ip', ['netns', 'del', ns], { allowFail: true });
    // Unpinning the link and maps drops the last references: the programs detach.
    fs.rmSync(path.join('/sys/fs/bpf', prefix), { recursive: true, force: true });
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return stale.map((s) => s.prefix);
}
