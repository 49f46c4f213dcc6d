// Debian's cloud kernels, fetched through a private apt state: the host's
// sources.list, lists and cache are never read or written, so this works on
// any Debian host (and leaves it as it was). Everything downloaded stays in a
// cache directory that later runs reuse.
import fs from 'node:fs';
import path from 'node:path';
import { run } from './proc.js';

const MIRROR = 'http://deb.debian.org/debian';
const SECURITY = 'http://deb.debian.org/debian-security';
const KEYRING = '/usr/share/keyrings/debian-archive-keyring.gpg';
/** Package indexes older than this are refreshed (a failed refresh keeps the old ones). */
const LISTS_MAX_AGE_MS = 12 * 3600_000;

/** What a user may ask for, and the suites whose newest cloud kernel answers. */
const SPECS: Record<string, { suite: string; security: boolean }> = {
  '5.10': { suite: 'bullseye', security: true },
  '6.1': { suite: 'bookworm', security: true },
  '6.12': { suite: 'trixie', security: true },
  newest: { suite: 'sid', security: false },
};
for (const v of Object.values({ ...SPECS })) SPECS[v.suite] ??= v;
SPECS.unstable = SPECS.newest!;

export const KNOWN_SPECS = Object.keys(SPECS);

export interface Kernel {
  /** As asked: "6.1", "newest", "trixie"... */
  spec: string;
  suite: string;
  /** The kernel release, as `uname -r` prints it in the guest. */
  release: string;
  /** The Debian package version of the image package. */
  packageVersion: string;
  /** Host paths, under the cache. */
  vmlinuz: string;
  modulesDir: string;
}

function sourcesList(spec: { suite: string; security: boolean }): string {
  const lines = [`deb [signed-by=${KEYRING}] ${MIRROR} ${spec.suite} main`];
  // Kernel fixes land in the security suite first; point releases follow.
  if (spec.security) lines.push(`deb [signed-by=${KEYRING}] ${SECURITY} ${spec.suite}-security main`);
  return lines.join('\n') + '\n';
}

/** apt-get/apt-cache with a state, cache and sources of its own. */
class PrivateApt {
  readonly dir: string;
  constructor(cacheRoot: string, private readonly spec: { suite: string; security: boolean }) {
    this.dir = path.join(cacheRoot, 'apt', spec.suite);
    for (const d of ['state/lists/partial', 'cache/archives/partial']) fs.mkdirSync(path.join(this.dir, d), { recursive: true });
    const list = path.join(this.dir, 'sources.list');
    const want = sourcesList(spec);
    if (!fs.existsSync(list) || fs.readFileSync(list, 'utf8') !== want) fs.writeFileSync(list, want);
  }

  private opts(): string[] {
    return [
      '-o', `Dir::State=${this.dir}/state`,
      '-o', `Dir::State::status=${this.dir}/state/status`, // empty: nothing "installed"
      '-o', `Dir::Cache=${this.dir}/cache`,
      '-o', `Dir::Etc::SourceList=${this.dir}/sources.list`,
      '-o', 'Dir::Etc::SourceParts=/dev/null',
      '-o', 'Dir::Etc::Preferences=/dev/null',
      '-o', 'Dir::Etc::PreferencesParts=/dev/null',
      '-o', 'APT::Sandbox::User=root', // downloads into a root-owned cache
      '-o', 'APT::Get::List-Cleanup=0',
      '-q',
    ];
  }

  async update(log: (s: string) => void): Promise<void> {
    fs.writeFileSync(path.join(this.dir, 'state/status'), '', { flag: 'a' });
    const stamp = path.join(this.dir, 'state/updated');
    const fresh = fs.existsSync(stamp) && Date.now() - fs.statSync(stamp).mtimeMs < LISTS_MAX_AGE_MS;
    if (fresh) return;
    log(`apt: refreshing ${this.spec.suite} package lists`);
    const r = await run('apt-get', [...this.opts(), 'update'], { timeoutMs: 300_000 });
    if (r.code === 0 && !/^(W|E): /m.test(r.stderr)) {
      fs.writeFileSync(stamp, new Date().toISOString());
    } else if (fs.readdirSync(path.join(this.dir, 'state/lists')).some((f) => f.endsWith('Packages') || f.includes('Packages.'))) {
      log(`apt: refreshing ${this.spec.suite} failed, using the lists from an earlier run:\n${r.stderr.trim()}`);
    } else {
      throw new Error(`apt-get update for ${this.spec.suite} failed:\n${r.stderr.trim()}`);
    }
  }

  /** The candidate's stanza, as apt-cache show prints it. */
  async show(pkg: string): Promise<Record<string, string>> {
    const r = await run('apt-cache', [...this.opts(), 'show', '--no-all-versions', pkg], { timeoutMs: 60_000 });
    if (r.code !== 0) throw new Error(`apt-cache show ${pkg} (${this.spec.suite}): ${r.stderr.trim()}`);
    const fields: Record<string, string> = {};
    for (const m of r.stdout.matchAll(/^([A-Za-z-]+): (.*)$/gm)) fields[m[1]!] ??= m[2]!;
    return fields;
  }

  async download(pkgs: string[], into: string): Promise<void> {
    const r = await run('apt-get', [...this.opts(), 'download', ...pkgs], { cwd: into, timeoutMs: 900_000 });
    if (r.code !== 0) throw new Error(`apt-get download ${pkgs.join(' ')} failed:\n${r.stderr.trim()}`);
  }
}

/** Package names in a Depends field (alternatives and version bounds dropped). */
function depends(field: string | undefined): string[] {
  return (field ?? '').split(',').flatMap((alt) => alt.split('|')).map((d) => d.trim().split(/[\s(]/)[0]!).filter(Boolean);
}

/**
 * Resolves a spec to the newest cloud kernel of its suite, downloads it (once)
 * and extracts it (once) with depmod run on the result.
 */
export async function fetchKernel(spec: string, cacheRoot: string, log: (s: string) => void): Promise<Kernel> {
  const s = SPECS[spec];
  if (!s) throw new Error(`unknown kernel "${spec}" (one of ${KNOWN_SPECS.join(', ')})`);
  const apt = new PrivateApt(cacheRoot, s);
  await apt.update(log);

  // The metapackage's candidate depends on the newest linux-image-<release>.
  const meta = await apt.show('linux-image-cloud-amd64');
  const image = depends(meta.Depends).find((d) => /^linux-image-\d.*-cloud-amd64(-unsigned)?$/.test(d));
  if (!image) throw new Error(`${s.suite}: linux-image-cloud-amd64 depends on no kernel (${meta.Depends})`);
  const release = image.replace(/^linux-image-/, '').replace(/-unsigned$/, '');
  const stanza = await apt.show(image);
  const packageVersion = stanza.Version!;

  const dir = path.join(cacheRoot, 'kernels', release);
  const root = path.join(dir, 'root');
  const done = path.join(dir, '.extracted');
  if (!fs.existsSync(done) || fs.readFileSync(done, 'utf8') !== packageVersion) {
    // Newer kernels (sid) split the image into linux-binary-, linux-modules-
    // and linux-base- packages of the same release: fetch those too.
    const parts = [image, ...depends(stanza.Depends).filter((d) => d.startsWith('linux-') && d.includes(release))];
    // Built beside and renamed into place: a run killed midway, or another
    // run extracting the same kernel, never leaves a half tree as "done".
    const tmp = `${dir}.tmp-${process.pid}`;
    const debs = path.join(tmp, 'debs');
    const tmpRoot = path.join(tmp, 'root');
    fs.rmSync(tmp, { recursive: true, force: true });
    fs.mkdirSync(debs, { recursive: true });
    try {
      log(`apt: downloading ${parts.join(' ')} (${packageVersion})`);
      await apt.download(parts, debs);
      for (const deb of fs.readdirSync(debs).filter((f) => f.endsWith('.deb'))) {
        const r = await run('dpkg-deb', ['-x', path.join(debs, deb), tmpRoot], { timeoutMs: 300_000 });
        if (r.code !== 0) throw new Error(`dpkg-deb -x ${deb}: ${r.stderr.trim()}`);
      }
      fs.rmSync(debs, { recursive: true, force: true }); // the extracted tree is what is reused
      await depmod(tmpRoot, release);
      fs.writeFileSync(path.join(tmp, '.extracted'), packageVersion);
      fs.rmSync(dir, { recursive: true, force: true });
      fs.renameSync(tmp, dir);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  }
  const modulesDir = findModules(root, release);
  const vmlinuz = [path.join(root, 'boot', `vmlinuz-${release}`), path.join(modulesDir, 'vmlinuz')].find((p) => fs.existsSync(p));
  if (!vmlinuz) throw new Error(`${release}: no vmlinuz in the extracted packages under ${root}`);
  return { spec, suite: s.suite, release, packageVersion, vmlinuz, modulesDir };
}

function findModules(root: string, release: string): string {
  const dir = [path.join(root, 'lib/modules', release), path.join(root, 'usr/lib/modules', release)]
    .find((p) => fs.existsSync(path.join(p, 'kernel')));
  if (!dir) throw new Error(`${release}: no module tree under ${root}`);
  return fs.realpathSync(dir);
}

/** Packages ship no modules.dep (postinst makes it): make it here, for both modprobes. */
async function depmod(root: string, release: string): Promise<void> {
  // depmod -b looks in <root>/lib/modules; newer packages use usr/lib/modules.
  const lib = path.join(root, 'lib/modules');
  if (!fs.existsSync(lib) && fs.existsSync(path.join(root, 'usr/lib/modules'))) {
    fs.mkdirSync(path.join(root, 'lib'), { recursive: true });
    fs.symlinkSync('../usr/lib/modules', lib);
  }
  const r = await run('depmod', ['-b', root, release], { timeoutMs: 300_000 });
  if (r.code !== 0) throw new Error(`depmod for ${release}: ${r.stderr.trim()}`);
}
