// Where the kernel filesystems the datapath needs are mounted, read from
// /proc/mounts (cgroup v2 is not always at /sys/fs/cgroup: hybrid layouts
// put it at /sys/fs/cgroup/unified).
import fs from 'node:fs';
import path from 'node:path';

export interface Mount { source: string; target: string; fstype: string; options: string }

/** /proc/mounts escapes space, tab, newline and backslash as octal. */
function unescapeMountField(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

export function parseMounts(text: string): Mount[] {
  return text.split('\n').filter((l) => l.trim() !== '').map((line) => {
    const [source = '', target = '', fstype = '', options = ''] = line.split(' ');
    return { source, target: unescapeMountField(target), fstype, options };
  });
}

export function readMounts(): Mount[] {
  return parseMounts(fs.readFileSync('/proc/mounts', 'utf8'));
}

export class MountError extends Error {}

/** The cgroup v2 mount point; throws a MountError saying so when there is none. */
export function cgroup2Root(mounts: Mount[] = readMounts()): string {
  const m = mounts.find((x) => x.fstype === 'cgroup2');
  if (!m) throw new MountError('no cgroup v2 filesystem is mounted (see /proc/mounts); sidecar-accel attaches sockops to a cgroup v2');
  return m.target;
}

/** True when `dir` is itself a bpffs mount point. */
export function isBpffs(dir: string, mounts: Mount[] = readMounts()): boolean {
  return mounts.some((m) => m.fstype === 'bpf' && m.target === dir);
}

/** The bpffs mount that contains `dir`, if any (the longest mount point prefix). */
export function bpffsContaining(dir: string, mounts: Mount[] = readMounts()): string | undefined {
  let best: Mount | undefined;
  for (const m of mounts) {
    const prefix = m.target.endsWith('/') ? m.target : m.target + '/';
    if ((dir === m.target || dir.startsWith(prefix)) && (!best || m.target.length > best.target.length)) best = m;
  }
  return best?.fstype === 'bpf' ? best.target : undefined;
}

/** cgroup v2 id of a cgroup directory: its inode number. */
export function cgroupId(dir: string): bigint {
  return fs.statSync(dir, { bigint: true }).ino;
}

/**
 * The cgroup v2 path of a process as /proc/<pid>/cgroup shows it ("0::" line,
 * relative to the cgroup namespace's root), or undefined when it has none.
 */
export function cgroupPathOf(pid: number | 'self' = 'self'): string | undefined {
  const line = fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n').find((l) => l.startsWith('0::'));
  return line?.slice(3);
}

/**
 * The directory of a process's cgroup under the cgroup2 mount, or undefined
 * when the mount does not show it (outside this cgroup namespace's view).
 */
export function cgroupDirOf(pid: number | 'self' = 'self', mount: string = cgroup2Root()): string | undefined {
  const rel = cgroupPathOf(pid);
  if (rel === undefined || !rel.startsWith('/') || rel.split('/').includes('..') || rel.endsWith(' (deleted)')) return undefined;
  const dir = path.join(mount, rel);
  return fs.existsSync(path.join(dir, 'cgroup.procs')) ? dir : undefined;
}

/** True when cgroup directory `dir` is `ancestor` or below it (compared by device and inode, up to the mount). */
export function cgroupWithin(dir: string, ancestor: string, mount: string = cgroup2Root()): boolean {
  const id = (d: string) => {
    const st = fs.statSync(d, { bigint: true });
    return `${st.dev}:${st.ino}`;
  };
  const want = id(ancestor);
  const top = path.resolve(mount);
  for (let d = path.resolve(dir); ; d = path.dirname(d)) {
    if (id(d) === want) return true;
    if (d === top || path.dirname(d) === d) return false;
  }
}
