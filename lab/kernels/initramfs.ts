// A tiny initramfs per guest kernel: busybox-static, guest/init.sh as /init
// and the handful of modules needed to mount the virtiofs root. Those modules
// are decompressed here, so busybox's insmod (which may not read .ko.xz or
// .ko.zst) can load them; dependencies come from the depmod run at fetch time.
import fs from 'node:fs';
import path from 'node:path';
import { run } from './proc.js';

/** What /init needs before the root is up (each is skipped when built in). */
const WANTED = ['virtio_pci', 'virtio_rng', 'virtiofs', 'overlay'];
const BUSYBOX = '/bin/busybox';

const canon = (name: string) => name.replace(/-/g, '_');
const modName = (rel: string) => canon(path.basename(rel).replace(/\.ko(\.(xz|zst|gz))?$/, ''));

/** Module files (relative to modulesDir) in load order: dependencies first. */
export function moduleLoadOrder(modulesDir: string, wanted = WANTED): string[] {
  const builtin = new Set(fs.readFileSync(path.join(modulesDir, 'modules.builtin'), 'utf8').split('\n').filter(Boolean).map(modName));
  const deps = new Map<string, { file: string; deps: string[] }>();
  for (const line of fs.readFileSync(path.join(modulesDir, 'modules.dep'), 'utf8').split('\n')) {
    const [file, rest] = line.split(':');
    if (!file || rest === undefined) continue;
    deps.set(modName(file), { file, deps: rest.trim().split(/\s+/).filter(Boolean).map(modName) });
  }
  const order: string[] = [];
  const seen = new Set<string>();
  const visit = (name: string) => {
    if (seen.has(name) || builtin.has(name)) return;
    seen.add(name);
    const m = deps.get(name);
    if (!m) throw new Error(`module ${name} is neither built in nor in ${modulesDir}/modules.dep`);
    m.deps.forEach(visit);
    order.push(m.file);
  };
  wanted.map(canon).forEach(visit);
  return order;
}

async function decompress(src: string, dst: string): Promise<void> {
  const tool = src.endsWith('.xz') ? 'xz' : src.endsWith('.zst') ? 'zstd' : src.endsWith('.gz') ? 'gzip' : null;
  if (!tool) { fs.copyFileSync(src, dst); return; }
  const r = await run('sh', ['-c', `${tool} -dc "$0" > "$1"`, src, dst], { timeoutMs: 60_000 });
  if (r.code !== 0) throw new Error(`${tool} -d ${src}: ${r.stderr.trim()}`);
}

/** Builds <workDir>/initramfs.cpio (newc, uncompressed: every kernel reads it). */
export async function buildInitramfs(opts: { modulesDir: string; initScript: string; workDir: string }): Promise<string> {
  if (!fs.existsSync(BUSYBOX)) throw new Error(`${BUSYBOX} missing: apt-get install busybox-static`);
  const stage = path.join(opts.workDir, 'initramfs');
  for (const d of ['bin', 'dev', 'proc', 'sys', 'modules']) fs.mkdirSync(path.join(stage, d), { recursive: true });
  fs.copyFileSync(BUSYBOX, path.join(stage, 'bin/busybox'));
  fs.chmodSync(path.join(stage, 'bin/busybox'), 0o755);
  fs.copyFileSync(opts.initScript, path.join(stage, 'init'));
  fs.chmodSync(path.join(stage, 'init'), 0o755);
  const list: string[] = [];
  for (const rel of moduleLoadOrder(opts.modulesDir)) {
    const name = path.basename(rel).replace(/\.(xz|zst|gz)$/, '');
    await decompress(path.join(opts.modulesDir, rel), path.join(stage, 'modules', name));
    list.push(name);
  }
  fs.writeFileSync(path.join(stage, 'modules.list'), list.map((l) => l + '\n').join(''));
  const out = path.join(opts.workDir, 'initramfs.cpio');
  const r = await run('sh', ['-c', 'cd "$0" && find . -print0 | cpio --null -o -H newc -R 0:0 --quiet > "$1"', stage, out],
    { timeoutMs: 60_000 });
  if (r.code !== 0) throw new Error(`cpio: ${r.stderr.trim()}`);
  fs.rmSync(stage, { recursive: true, force: true });
  return out;
}
