// Commands that build pods and load programs (demo, bench) must leave nothing
// behind: not when they end, not on Ctrl-C, not after a killed earlier run.
import { sweepStaleTopologies } from '../topology/sweep.js';

/**
 * Sweeps what killed runs left, runs `body`, and always runs `cleanup`
 * after it; SIGINT / SIGTERM run `cleanup` first and exit 130.
 */
/** Set once a signal started the cleanup: what fails after that is its echo, not news. */
export let interrupted = false;

export async function runCleanly<T>(say: (s: string) => void, cleanup: () => Promise<void>, body: () => Promise<T>): Promise<T> {
  const onSignal = () => {
    interrupted = true;
    say('\ninterrupted: cleaning up');
    void cleanup().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const swept = await sweepStaleTopologies();
    if (swept.length) say(`removed leftovers of killed runs: ${swept.join(', ')}`);
    return await body();
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await cleanup();
  }
}
