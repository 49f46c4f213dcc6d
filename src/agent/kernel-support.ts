// Which kernel releases the agent serves at all. The programs load from 5.15
// on, but loading is not enough: a release is served from the oldest one the
// kernel matrix ran every core suite on (README, Kernels), and below it the
// self-test refuses with this check. 6.1.192 was refused while its integrity
// runs came up short; those losses were the test sidecar's (HAProxy polling
// level-triggered, the same with the datapath off), and with the sidecars
// fixed 6.1.192 passed every suite (sidecar-only: it fails FIONREAD).
import type { Check } from './selftest-peer.js';

/** The oldest release the kernel matrix verified (README, Kernels). */
export const OLDEST_VERIFIED: readonly [number, number] = [6, 1];

/** major.minor of a `uname -r` string, or null when it does not start with one. */
export function releaseVersion(release: string): [number, number] | null {
  const m = /^(\d+)\.(\d+)/.exec(release);
  return m ? [Number(m[1]), Number(m[2])] : null;
}

export function kernelSupportCheck(release: string): Check {
  const v = releaseVersion(release);
  const [wantMajor, wantMinor] = OLDEST_VERIFIED;
  const ok = v !== null && (v[0] > wantMajor || (v[0] === wantMajor && v[1] >= wantMinor));
  const detail = ok ? `Linux ${release}`
    : v === null ? `cannot read a version from the kernel release "${release}"`
    : `Linux ${release} is older than ${wantMajor}.${wantMinor}, the oldest the kernel matrix verified (README, Kernels)`;
  return { name: 'kernel-verified', ok, detail, kind: 'required' };
}
