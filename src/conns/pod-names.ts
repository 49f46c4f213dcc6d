// Pod names for `sidecar-accel conns`: the kernel knows netns cookies only;
// the running agent knows which pod each one is (GET /v1/workloads).
export interface PodNames {
  /** "namespace/name" by netns cookie. */
  byCookie: Map<bigint, string>;
  /** Why there are none (the agent did not answer), or null. */
  unavailable: string | null;
}

interface WorkloadLine { namespace?: unknown; name?: unknown; netnsCookie?: unknown }

/** Asks the agent's API at host:port; never throws (names are a convenience). */
export async function podNamesFromAgent(listen: string, timeoutMs = 1000): Promise<PodNames> {
  const url = `http://${listen}/v1/workloads`;
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    if (!res.ok) return { byCookie: new Map(), unavailable: `${url} answered ${res.status}` };
    const body = await res.json() as { workloads?: WorkloadLine[] };
    const byCookie = new Map<bigint, string>();
    for (const w of body.workloads ?? []) {
      if (typeof w.netnsCookie === 'string' && /^\d+$/.test(w.netnsCookie) && typeof w.namespace === 'string' && typeof w.name === 'string') {
        byCookie.set(BigInt(w.netnsCookie), `${w.namespace}/${w.name}`);
      }
    }
    return { byCookie, unavailable: null };
  } catch (e) {
    return { byCookie: new Map(), unavailable: `the agent's API (${url}) did not answer: ${(e as Error).message}` };
  }
}
