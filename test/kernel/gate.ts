// Real-kernel tests need root. Outside CI, a non-root run skips them and
// says why; with REQUIRE_KERNEL=1 (CI) they run and fail instead.
export const isRoot = process.getuid?.() === 0;
export const requireKernel = process.env.REQUIRE_KERNEL === '1';

/** The `skip` option of a real-kernel suite. */
export const kernelSkip: string | false = isRoot || requireKernel
  ? false
  : 'real-kernel test: needs root (REQUIRE_KERNEL=1 turns this skip into a failure)';

/** Call first in a kernel suite: with REQUIRE_KERNEL=1 and no root, fail clearly. */
export function assertKernelAccess(): void {
  if (!isRoot) throw new Error('REQUIRE_KERNEL=1 but not running as root: real-kernel tests cannot run');
}
