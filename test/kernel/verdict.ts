// What the agent's start-up self-test decides on this kernel. A test whose
// expectation depends on a kernel property the self-test probes (FIONREAD,
// MSG_PEEK) asks for it: where full mode deviates from TCP, the self-test
// must have named the deviation (so the agent pairs only the sidecar's
// sockets there), and that mode must equal TCP. Inside a kernel-matrix guest
// the load probe already ran it and passes it on (SIDECAR_ACCEL_SELFTEST);
// on a host it runs once per test process, on the suite's own datapath.
import { isDeepStrictEqual } from 'node:util';
import type { Datapath } from '../../src/datapath/datapath.js';
import { runSelfTest, type SelfTestMode } from '../../src/agent/selftest.js';

export interface KernelVerdict { mode: SelfTestMode; failed: string[] }

/** The self-test checks that probe what a case of the same name observes. */
export const CHECKS_OF_CASE: Readonly<Record<string, readonly string[]>> = {
  fionread: ['fionread', 'fionread-tcp-queue'],
  peek: ['peek'],
  // FIONREAD and MSG_PEEK of a message redirected after a return from TCP.
  'resume-peek': ['fionread', 'fionread-tcp-queue', 'peek'],
};

let cached: Promise<KernelVerdict> | undefined;

export function parseVerdict(text: string): KernelVerdict {
  const v = JSON.parse(text) as Partial<KernelVerdict>;
  if (!v || !['full', 'sidecar-only', 'refuse'].includes(String(v.mode)) || !Array.isArray(v.failed)) {
    throw new Error(`SIDECAR_ACCEL_SELFTEST is not a self-test verdict: ${text}`);
  }
  return { mode: v.mode as SelfTestMode, failed: v.failed.map(String) };
}

export function kernelVerdict(dp: Datapath): Promise<KernelVerdict> {
  cached ??= process.env.SIDECAR_ACCEL_SELFTEST
    ? Promise.resolve(parseVerdict(process.env.SIDECAR_ACCEL_SELFTEST))
    : runSelfTest(dp, process.env.SIDECAR_ACCEL_EMULATED === '1' ? 600_000 : 30_000)
      .then((r) => ({ mode: r.mode, failed: r.checks.filter((c) => !c.ok).map((c) => c.name) }));
  return cached;
}

/** Why a case's deviation is acceptable only in a mode the agent never runs here, or null when the self-test missed it. */
export function caughtBySelfTest(v: KernelVerdict, caseName: string): string | null {
  const named = (CHECKS_OF_CASE[caseName] ?? []).filter((c) => v.failed.includes(c));
  if (named.length === 0 || v.mode !== 'sidecar-only') return null;
  return `the self-test fails ${named.join(', ')} on this kernel, so the agent pairs only the sidecar's sockets here`;
}

/** A copy without the fields that report FIONREAD/SIOCINQ (the peers name them inq*). */
export function withoutQueueReadings(o: unknown): unknown {
  if (Array.isArray(o)) return o.map(withoutQueueReadings);
  if (o && typeof o === 'object') {
    return Object.fromEntries(Object.entries(o).filter(([k]) => !/^inq/.test(k)).map(([k, v]) => [k, withoutQueueReadings(v)]));
  }
  return o;
}

/**
 * The self-test check a deviation between two observations belongs to: a
 * case named after a check, or any case whose only differences are FIONREAD
 * readings; null when no check covers it.
 */
export function checkedCase(caseName: string, on: unknown, off: unknown): string | null {
  if (isDeepStrictEqual(withoutQueueReadings(on), withoutQueueReadings(off))) return 'fionread';
  return CHECKS_OF_CASE[caseName] ? caseName : null;
}
