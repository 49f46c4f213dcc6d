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

/**
 * Inside the kernel matrix's qemu guests (software emulation, 40-50x slower
 * than the host) every bound a test waits for is this many times longer.
 * Bounds only: what a test asserts stays the same.
 */
export const slowdown = process.env.SIDECAR_ACCEL_EMULATED === '1' ? 20 : 1;
export const scaled = (ms: number): number => ms * slowdown;
