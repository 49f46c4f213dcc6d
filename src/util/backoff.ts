// Exponential backoff with jitter, one policy for everything that retries
// (reconcile passes, kubernetes list/watch, xDS streams): the n-th consecutive
// failure waits initial * 2^(n-1), capped at max, drawn from [50%, 100%] of
// that. The jitter spreads the retries of many nodes after a shared outage
// (an API server or istiod restart); drawing below the cap never exceeds it.

export interface BackoffPolicy { initialMs: number; maxMs: number }

/** The delay after the n-th consecutive failure (n >= 1). `random` returns [0, 1). */
export function backoffDelay(p: BackoffPolicy, failures: number, random: () => number = Math.random): number {
  const base = Math.min(p.maxMs, p.initialMs * 2 ** Math.max(0, failures - 1));
  return Math.round(base * (0.5 + random() / 2));
}

/** The consecutive failures of one retried thing. */
export class Backoff {
  private count = 0;

  constructor(readonly policy: BackoffPolicy, private readonly random: () => number = Math.random) {
    if (!(policy.initialMs > 0) || !(policy.maxMs >= policy.initialMs)) {
      throw new RangeError(`backoff: need 0 < initialMs <= maxMs, got ${policy.initialMs} and ${policy.maxMs}`);
    }
  }

  /** Counts a failure; returns the delay before the next try. */
  failed(): number {
    return backoffDelay(this.policy, ++this.count, this.random);
  }

  /** A success: the next failure waits about initialMs again. */
  reset(): void {
    this.count = 0;
  }

  get failures(): number {
    return this.count;
  }
}
