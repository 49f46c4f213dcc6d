// The kernel matrix: boots Debian's cloud kernels under qemu on the host's own
// root filesystem (virtiofs, read-only, tmpfs overlay in the guest) and runs
// the project's tests inside each, against the host-built dist/ and build/.
//
//   node dist/lab/kernels/matrix.js [--kernel 6.1 --kernel 6.12 ...] [--tests layout,isolation]
//        [--timeout-min N] [--json out.json] [--guest-cmd CMD] [--accel auto|kvm|tcg] [--follow]
//
// See lab/kernels/README.md. Needs root (virtiofsd), qemu-system-x86,
// busybox-static, kmod, cpio, xz-utils, zstd, util-linux (setpriv).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { fetchKernel, KNOWN_SPECS, type Kernel } from './debian.js';
import { buildInitramfs } from './initramfs.js';
import { Cleanup, killAll, run } from './proc.js';
import { readLoad, readSuite, renderTable, type KernelResult } from './report.js';
import { bootGuest, consoleLine, virtiofsdPath, type Accel } from './vm.js';

const here = path.dirname(fileURLToPath(import.meta.url));
/** The project the host runs from; the guest sees it at the same path. */
const repo = path.resolve(here, '../../..');
const srcDir = path.join(repo, 'lab/kernels');
const RUN_PREFIX = 'sidecar-accel-kmatrix-';
const DEFAULT_CMD = 'node scripts/run-tests.js $KMATRIX_FILTER';

const USAGE = `usage: node dist/lab/kernels/matrix.js [options]
  --kernel K        ${KNOWN_SPECS.join(' | ')} (repeatable or comma-separated; default 6.1,6.12,newest)
  --tests a,b+c     one suite per comma entry, run as scripts/run-tests.js <filters> ('+' joins
                    filters into one run); default: one suite of every test
  --timeout-min N   per kernel, for everything after boot (default: estimated from the test files)
  --boot-timeout-s N  qemu start to the guest's first marker (default 180 with TCG, 60 with KVM)
  --json FILE       write the results as JSON
  --guest-cmd CMD   run instead of "${DEFAULT_CMD}" (bash, in the project dir; the suite's filters
                    are in $KMATRIX_FILTER)
  --accel A         auto (default: KVM if a probe boot with it works, else TCG) | kvm | tcg
  --cache DIR       downloaded kernels and apt state (default /var/cache/sidecar-accel-kernels)
  --logs DIR        console and suite logs (default build/kernels/logs)
  --refused K       a kernel the project must refuse: the object does not load, or the agent's
                    self-test refuses it (repeatable or comma-separated);
                    it passes when refused, and fails if it is served
  --follow          print the guest's console as it comes
  --cpus N --mem-mib N   guest size (default 2, 3072)
  --parallel N      boot up to N kernels at once (default 1); for hosts with CPUs to spare: on
                    2 CPUs two TCG guests slowed each other 1.7-2x, no faster in all`;

interface Options {
  kernels: string[];
  /** Kernels the programs cannot serve: they must refuse the object. */
  refused: string[];
  suites: string[];
  timeoutMin: number | null;
  bootTimeoutS: number | null;
  json: string | null;
  guestCmd: string;
  accel: 'auto' | Accel;
  cache: string;
  logs: string;
  follow: boolean;
  cpus: number;
  memMiB: number;
  parallel: number;
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      kernel: { type: 'string', multiple: true }, refused: { type: 'string', multiple: true }, tests: { type: 'string' }, 'timeout-min': { type: 'string' },
      'boot-timeout-s': { type: 'string' }, json: { type: 'string' }, 'guest-cmd': { type: 'string' },
      accel: { type: 'string' }, cache: { type: 'string' }, logs: { type: 'string' }, follow: { type: 'boolean' },
      cpus: { type: 'string' }, 'mem-mib': { type: 'string' }, parallel: { type: 'string' }, help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) { console.log(USAGE); process.exit(0); }
  const num = (v: string | undefined, name: string) => {
    if (v === undefined) return null;
    const n = Number(v);
    if (!(n > 0)) throw new Error(`--${name} wants a positive number, not "${v}"`);
    return n;
  };
  const kernels = (values.kernel ?? ['6.1,6.12,newest']).flatMap((k) => k.split(',')).map((k) => k.trim()).filter(Boolean);
  for (const k of kernels) if (!KNOWN_SPECS.includes(k)) throw new Error(`unknown --kernel ${k} (one of ${KNOWN_SPECS.join(', ')})`);
  const accel = values.accel ?? 'auto';
  if (!['auto', 'kvm', 'tcg'].includes(accel)) throw new Error(`--accel is auto, kvm or tcg, not ${accel}`);
  const refused = (values.refused ?? []).flatMap((k) => k.split(',')).map((k) => k.trim()).filter(Boolean);
  for (const k of refused) if (!kernels.includes(k)) kernels.push(k);
  return {
    kernels,
    refused,
    suites: values.tests === undefined ? [''] : values.tests.split(',').map((s) => s.trim().split('+').join(' ')).filter(Boolean),
    timeoutMin: num(values['timeout-min'], 'timeout-min'),
    bootTimeoutS: num(values['boot-timeout-s'], 'boot-timeout-s'),
    json: values.json ?? null,
    guestCmd: values['guest-cmd'] ?? DEFAULT_CMD,
    accel: accel as Options['accel'],
    cache: path.resolve(values.cache ?? process.env.SIDECAR_ACCEL_KERNEL_CACHE ?? '/var/cache/sidecar-accel-kernels'),
    logs: path.resolve(values.logs ?? path.join(repo, 'build/kernels/logs')),
    follow: values.follow ?? false,
    cpus: num(values.cpus, 'cpus') ?? 2,
    memMiB: num(values['mem-mib'], 'mem-mib') ?? 3072,
    parallel: Math.floor(num(values.parallel, 'parallel') ?? 1),
  };
}

const log = (s: string) => console.error(`[kmatrix] ${s}`);

/**
 * Minutes a suite may take under TCG, from the test files it selects (as
 * scripts/run-tests.js selects them): a kernel test file takes a few minutes
 * emulated, a unit file well under one; plus node's start and the sweep.
 */
function estimateMinutes(suites: string[]): number {
  const find = (dir: string): string[] => !fs.existsSync(dir) ? [] : fs.readdirSync(dir, { withFileTypes: true })
    .flatMap((e) => e.isDirectory() ? find(path.join(dir, e.name)) : e.name.endsWith('.test.js') ? [path.join(dir, e.name)] : []);
  const files = [...find(path.join(repo, 'dist/test/unit')), ...find(path.join(repo, 'dist/test/kernel'))];
  let min = 2; // the load probe
  for (const s of suites) {
    const only = s.split(' ').filter(Boolean);
    const picked = files.filter((f) => only.length === 0 || only.some((o) => f.includes(o)));
    min += 2 + picked.reduce((m, f) => m + (f.includes('/kernel/') ? 5 : 1), 0);
  }
  return min;
}

/** Run directories of earlier runs that were SIGKILLed (their pid is gone). */
function sweepStaleRunDirs(): void {
  for (const name of fs.readdirSync(os.tmpdir())) {
    const m = new RegExp(`^${RUN_PREFIX}(\\d+)-`).exec(name);
    if (!m) continue;
    try { process.kill(Number(m[1]), 0); continue; } catch { /* gone */ }
    log(`removing ${name}, left by a killed run`);
    fs.rmSync(path.join(os.tmpdir(), name), { recursive: true, force: true });
  }
}

async function preflight(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('needs root (virtiofsd, and the guest shares the host root as root)');
  virtiofsdPath();
  for (const [bin, pkg] of [['qemu-system-x86_64', 'qemu-system-x86'], ['cpio', 'cpio'], ['depmod', 'kmod'],
    ['setpriv', 'util-linux'], ['xz', 'xz-utils'], ['zstd', 'zstd'], ['apt-get', 'apt'], ['dpkg-deb', 'dpkg']]) {
    const r = await run('sh', ['-c', `command -v ${bin}`], { timeoutMs: 10_000 });
    if (r.code !== 0) throw new Error(`${bin} not found: apt-get install ${pkg}`);
  }
  for (const f of ['dist/src/datapath/datapath.js', 'build/bpf/sidecar_accel.bpf.o', 'scripts/run-tests.js', 'dist/lab/kernels/probe-load.js']) {
    if (!fs.existsSync(path.join(repo, f))) throw new Error(`${f} missing: run npm run build first`);
  }
}

/** Writes the job the guest's run.sh reads. */
function writeJob(jobDir: string, k: Kernel, o: Options, accel: Accel, deadlineS: number, probeOnly: boolean): void {
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const env = {
    KMATRIX_KVER: k.release,
    KMATRIX_MODULES: k.modulesDir,
    KMATRIX_PROJECT: repo,
    KMATRIX_CMD: o.guestCmd,
    KMATRIX_LOAD_PROBE: path.join(repo, 'dist/lab/kernels/probe-load.js'),
    KMATRIX_OBJECT: path.join(repo, 'build/bpf/sidecar_accel.bpf.o'),
    KMATRIX_EMULATED: accel === 'tcg' ? '1' : '0',
    KMATRIX_DEADLINE: String(Math.floor(deadlineS)),
    KMATRIX_PROBE_ONLY: probeOnly ? '1' : '0',
    KMATRIX_OVERLAY_SIZE: `${Math.floor(o.memMiB / 2)}m`,
  };
  fs.writeFileSync(path.join(jobDir, 'job.env'), Object.entries(env).map(([k2, v]) => `${k2}=${q(v)}\n`).join(''));
  fs.copyFileSync(path.join(srcDir, 'guest/run.sh'), path.join(jobDir, 'run.sh'));
  fs.writeFileSync(path.join(jobDir, 'suites'), o.suites.map((s) => s + '\n').join(''));
}

/** KVM only if a short boot with it reaches userspace; the nested hypervisor here often cannot. */
async function probeKvm(k: Kernel, initramfs: string, runDir: string, o: Options): Promise<boolean> {
  if (!fs.existsSync('/dev/kvm')) return false;
  const jobDir = path.join(runDir, 'kvm-probe');
  fs.mkdirSync(jobDir);
  writeJob(jobDir, k, o, 'kvm', 60, true);
  const cleanup = new Cleanup();
  try {
    const r = await bootGuest({
      vmlinuz: k.vmlinuz, initramfs, jobDir, runDir, accel: 'kvm', cpus: o.cpus, memMiB: o.memMiB,
      bootTimeoutMs: 30_000, totalTimeoutMs: 40_000, consoleLog: path.join(runDir, 'kvm-probe.log'),
    }, cleanup);
    const ok = r.markers.some((m) => m.startsWith('KMATRIX-DONE probe'));
    log(`KVM probe boot: ${ok ? `works (${((r.bootMs ?? 0) / 1000).toFixed(1)} s)` : `failed (${r.timedOut ? `timed out at ${r.timedOut}` : `qemu exit ${r.qemuExit}`}${r.qemuStderr ? `: ${r.qemuStderr.trim().split('\n')[0]}` : ''}), using TCG`}`);
    return ok;
  } finally {
    await cleanup.run(log);
  }
}

/** What kernels running side by side share: one accelerator decision, one download at a time. */
interface Shared {
  accel: Promise<Accel> | null;
  fetching: Promise<unknown>;
}

async function runKernel(spec: string, o: Options, state: Shared, root: Cleanup): Promise<KernelResult> {
  const t0 = Date.now();
  const res: KernelResult = { spec, booted: false, suites: [], totalSeconds: 0 };
  const cleanup = new Cleanup();
  root.add(`kernel ${spec}`, () => cleanup.run(log)); // Ctrl-C mid-boot still cleans up
  try {
    // apt state per suite under one cache: downloads take turns.
    const fetched = state.fetching.then(() => fetchKernel(spec, o.cache, log));
    state.fetching = fetched.catch(() => undefined);
    const k = await fetched;
    Object.assign(res, { suite: k.suite, release: k.release, packageVersion: k.packageVersion });
    log(`${spec}: ${k.suite} ${k.release} (package ${k.packageVersion})`);

    const runDir = fs.mkdtempSync(path.join(os.tmpdir(), `${RUN_PREFIX}${process.pid}-`));
    cleanup.add('run dir', () => fs.rmSync(runDir, { recursive: true, force: true }));
    const initramfs = await buildInitramfs({ modulesDir: k.modulesDir, initScript: path.join(srcDir, 'guest/init.sh'), workDir: runDir });

    // The first kernel here decides for all; the others wait for its probe.
    state.accel ??= o.accel === 'auto' ? probeKvm(k, initramfs, runDir, o).then((ok): Accel => ok ? 'kvm' : 'tcg') : Promise.resolve(o.accel);
    const accel = await state.accel;
    res.accel = accel;

    const jobDir = path.join(runDir, 'job');
    fs.mkdirSync(jobDir);
    // Guests side by side share the host's CPUs: each may take that much longer.
    const workMin = o.timeoutMin ?? estimateMinutes(o.suites) * Math.min(o.parallel, o.kernels.length);
    const bootS = o.bootTimeoutS ?? (accel === 'tcg' ? 180 : 60);
    // The guest stops its own work a minute before qemu is killed, to report in.
    writeJob(jobDir, k, o, accel, bootS + workMin * 60, false);
    const logDir = path.join(o.logs, `${spec}-${k.release}`);
    fs.rmSync(logDir, { recursive: true, force: true });
    fs.mkdirSync(logDir, { recursive: true });
    res.logDir = logDir;

    log(`${spec}: booting (${accel}, ${o.cpus} vCPUs, ${o.memMiB} MiB; boot limit ${bootS} s, work limit ${workMin} min)`);
    // Each boot its own socket directory: the first boot's virtiofsd may still hold its sockets.
    const boot = (consoleLog: string, sockDir: string) => bootGuest({
      vmlinuz: k.vmlinuz, initramfs, jobDir, runDir: sockDir, accel, cpus: o.cpus, memMiB: o.memMiB,
      bootTimeoutMs: bootS * 1000, totalTimeoutMs: (bootS + workMin * 60 + 60) * 1000,
      consoleLog,
      onLine: (line) => {
        if (o.follow) console.error(`[${spec}] ${line}`);
        else if (/KMATRIX-(BOOTED|LOADED|SUITE|DONE|INIT-FAILED)/.test(line)) log(`${spec}: ${line.slice(line.indexOf('KMATRIX-')).trim()}`);
      },
    }, cleanup);
    let r = await boot(path.join(logDir, 'console.log'), runDir);
    // An emulated boot that dies before the guest's init speaks (seen once in
    // CI: qemu exit 0 within seconds) says nothing about the project: the
    // guest ran none of it. Boot once more, and say so with the first console's end.
    if (r.bootMs === null && !interrupted) {
      const first = path.join(logDir, 'console-first-boot.log');
      fs.renameSync(path.join(logDir, 'console.log'), first);
      const tail = fs.readFileSync(first, 'utf8').split('\n').map((l) => consoleLine(l).trim()).filter(Boolean).slice(-3).join(' | ');
      res.bootRetry = `the first ${r.timedOut === 'boot' ? `gave no boot marker within ${bootS} s` : `ended before userspace (qemu exit ${r.qemuExit})`}; its console ended: ${tail || '(nothing)'} (${first})`;
      log(`${spec}: ${res.bootRetry}; booting again`);
      const again = path.join(runDir, 'second-boot');
      fs.mkdirSync(again);
      r = await boot(path.join(logDir, 'console.log'), again);
    }
    res.booted = r.bootMs !== null;
    if (r.bootMs !== null) res.bootSeconds = r.bootMs / 1000;
    res.guestSeconds = r.totalMs / 1000;
    res.load = readLoad(jobDir);
    res.suites = o.suites.map((s, i) => readSuite(jobDir, i + 1, s, logDir));
    for (const f of fs.readdirSync(jobDir)) if (/^(suite-\d+\.log|load\.(json|log)|verifier\.log)$/.test(f)) fs.copyFileSync(path.join(jobDir, f), path.join(logDir, f));
    const initFail = r.markers.find((m) => m.startsWith('KMATRIX-INIT-FAILED'));
    if (initFail) res.error = `guest init failed: ${initFail}`;
    else if (r.timedOut === 'boot') res.error = `no boot marker within ${bootS} s${r.qemuStderr ? ` (qemu: ${r.qemuStderr.trim().split('\n')[0]})` : ''}`;
    else if (r.timedOut) res.error = `killed after the ${workMin} min work limit`;
    else if (!r.markers.some((m) => m.startsWith('KMATRIX-DONE'))) res.error = `guest ended early (qemu exit ${r.qemuExit}); see console.log`;
  } catch (e) {
    // An interrupt's cleanup removes the run directory under the reads above:
    // the interrupt is the story (main says so), not the missing files.
    if (!interrupted) res.error = (e as Error).message;
  } finally {
    await cleanup.run(log);
    res.totalSeconds = (Date.now() - t0) / 1000;
  }
  return res;
}

/** Set by a signal: start no further boot. */
let interrupted: string | null = null;

async function main(): Promise<number> {
  const o = parseOptions(process.argv.slice(2));
  await preflight();
  sweepStaleRunDirs();
  const root = new Cleanup();
  // Ctrl-C / kill: stop the guest (the kernel in progress then ends as a
  // failure and cleans up after itself), start no other kernel, report what
  // ran and exit 130. A second signal exits at once (children die with us).
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      if (interrupted) process.exit(130);
      interrupted = sig;
      log(`${sig}: stopping`);
      void root.run(log);
      killAll();
    });
  }
  const results: KernelResult[] = [];
  const state: Shared = { accel: null, fetching: Promise.resolve() };
  // Workers take the kernels in the order given; the table keeps that order.
  let next = 0;
  const worker = async () => {
    while (!interrupted && next < o.kernels.length) {
      const i = next++;
      const spec = o.kernels[i]!;
      const r = await runKernel(spec, o, state, root);
      if (interrupted) r.error = `interrupted (${interrupted})${r.error ? `: ${r.error}` : ''}`;
      results[i] = r;
      log(`${spec}: done in ${r.totalSeconds.toFixed(0)} s`);
    }
  };
  await Promise.all(Array.from({ length: Math.min(o.parallel, o.kernels.length) }, worker));
  await root.run(log);
  // An interrupt leaves the kernels no worker reached out of the table.
  const ran = results.filter((r): r is KernelResult => r !== undefined);
  console.log(renderTable(ran, o.suites));
  if (o.json) fs.writeFileSync(o.json, JSON.stringify({ project: repo, suites: o.suites, results: ran }, null, 2) + '\n');
  if (interrupted) return 130;
  // A kernel the programs cannot serve passes by refusing them (its suites run on
  // a datapath that never loaded and are not counted).
  const good = ran.length === o.kernels.length && ran.every((r) => o.refused.includes(r.spec)
    ? r.booted && r.load !== undefined && !r.load.ok
    : r.booted && !r.error && r.load?.ok && r.suites.every((s) => s.status === 'pass'));
  if (o.refused.length) log(`expected to refuse: ${o.refused.join(', ')}`);
  return good ? 0 : 1;
}

main().then((code) => process.exit(code), (e: Error) => {
  console.error(`kmatrix: ${e.message}`);
  process.exit(2);
});
