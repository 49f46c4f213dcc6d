// cgroup v2 directories for pods: created, filled, killed and removed.
import fs from 'node:fs';
import path from 'node:path';

export function makeCgroup(dir: string): void {
  fs.mkdirSync(dir);
}

export function cgroupPopulated(dir: string): boolean {
  const events = fs.readFileSync(path.join(dir, 'cgroup.events'), 'utf8');
  return /^populated 1$/m.test(events);
}

/**
 * Kills every process of the cgroup and its children (cgroup.kill, 5.14+),
 * waits for the kernel's "populated 0" event, then removes the directories.
 */
export async function destroyCgroup(dir: string, timeoutMs = 10_000): Promise<void> {
  if (!fs.existsSync(dir)) return;
  if (cgroupPopulated(dir)) {
    fs.writeFileSync(path.join(dir, 'cgroup.kill'), '1');
    await waitUnpopulated(dir, timeoutMs);
  }
  removeTree(dir);
}

function waitUnpopulated(dir: string, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const file = path.join(dir, 'cgroup.events');
    const watcher = fs.watch(file, () => check());
    const timer = setTimeout(() => { watcher.close(); reject(new Error(`cgroup ${dir} still populated after ${timeoutMs} ms`)); }, timeoutMs);
    function check(): void {
      if (!cgroupPopulated(dir)) {
        clearTimeout(timer);
        watcher.close();
        resolve();
      }
    }
    check();
  });
}

function removeTree(dir: string): void {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    if (e.isDirectory()) removeTree(path.join(dir, e.name));
  }
  fs.rmdirSync(dir);
}
