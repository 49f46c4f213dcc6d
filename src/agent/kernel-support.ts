// Which kernel releases the agent serves at all. The programs load from 5.15
// on, but loading is not enough: on Debian's 6.1.192 the kernel matrix's
// byte-stream integrity suite lost bytes (streams through both sidecars came
// up short with a clean EOF, or a sidecar's send failed) in 4 of 5 runs,
// cause not yet found, while 6.12.118, 7.2.13 and 6.18.44 kept every byte.
// A kernel where a byte may be lost is not served: below the oldest release
// the matrix verified, the self-test refuses with this check.
import type { Check } from './selftest-peer.js';

/** The oldest release the kernel matrix verified (README, Kernels). */
export const OLDEST_VERIFIED: readonly [number, number] = [6, 12];

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
    : `Linux ${release} is older than ${wantMajor}.${wantMinor}, the oldest the kernel matrix verified: on 6.1 streams lost bytes under load (README, Kernels)`;
  return { name: 'kernel-verified', ok, detail, kind: 'required' };
}
