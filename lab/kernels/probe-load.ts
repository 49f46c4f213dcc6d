// Runs INSIDE a kernel-matrix guest (guest/run.sh): does this kernel load,
// verify and attach the project's BPF object, and what does the agent's
// start-up self-test decide here (full, sidecar-only or refuse)? It opens the
// datapath on a cgroup and pin directory of its own, reads back the
// attachment, runs the self-test, uninstalls, and prints one JSON line
// (ok: the agent would serve this kernel). It refuses to run on a host (no /kmatrix/job.env),
// where it would attach programs to the host's cgroups.
//
// The datapath is imported by path at run time rather than statically, so this
// file does not pull src/ into the lab build and always checks whatever dist/
// the host built.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

interface DatapathLike {
  attachment(): { sockopsLinked: boolean; skMsgAttached: boolean; ourProgIds: { sockops: number; msg: number } };
  uninstall(): void;
}
interface DatapathModule { Datapath: { open(o: { cgroupPath: string; pinRoot: string }): DatapathLike } }
interface SelfTestModule {
  runSelfTest(dp: DatapathLike, timeoutMs?: number): Promise<{ mode: string; checks: { name: string; ok: boolean; detail: string; kind: string }[] }>;
}

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const cgroupPath = '/sys/fs/cgroup/kmatrix-load-probe';
const pinRoot = '/sys/fs/bpf/kmatrix-load-probe';

if (!fs.existsSync('/kmatrix/job.env')) {
  console.error('probe-load: runs only inside a kernel-matrix guest');
  process.exit(2);
}

const started = Date.now();
let out: Record<string, unknown>;
try {
  fs.mkdirSync(cgroupPath, { recursive: true });
  const { Datapath } = await import(pathToFileURL(path.join(repo, 'dist/src/datapath/datapath.js')).href) as DatapathModule;
  const dp = Datapath.open({ cgroupPath, pinRoot });
  try {
    const a = dp.attachment();
    const { runSelfTest } = await import(pathToFileURL(path.join(repo, 'dist/src/agent/selftest.js')).href) as SelfTestModule;
    // Emulated CPUs are 10-50x slower: the self-test's own bound scales.
    const st = await runSelfTest(dp, process.env.SIDECAR_ACCEL_EMULATED === '1' ? 600_000 : 30_000);
    const failed = st.checks.filter((c) => !c.ok);
    const refusedBy = failed.filter((c) => c.kind === 'required').map((c) => `${c.name}: ${c.detail}`);
    // A kernel the agent refuses to serve counts as refused: its suites do not run.
    out = {
      ok: a.sockopsLinked && a.skMsgAttached && st.mode !== 'refuse', attachment: a, ms: Date.now() - started,
      ...(st.mode === 'refuse' ? { error: `the agent refuses this kernel (self-test): ${refusedBy.join('; ')}` } : {}),
      selfTest: {
        mode: st.mode,
        failed: failed.map((c) => `${c.name} (${c.kind}): ${c.detail}`),
        // What the guest's suites read back (test/kernel/verdict.ts), as SIDECAR_ACCEL_SELFTEST.
        verdict: { mode: st.mode, failed: failed.map((c) => c.name) },
      },
    };
  } finally {
    dp.uninstall();
  }
} catch (e) {
  out = { ok: false, error: (e as Error).message, ms: Date.now() - started };
} finally {
  try { fs.rmdirSync(cgroupPath); } catch { /* not created */ }
  fs.rmSync(pinRoot, { recursive: true, force: true });
}
console.log(JSON.stringify(out));
process.exit(out.ok ? 0 : 1);
