// Many changes in one tick (a list of hundreds of pods, a response of many
// resources) make one call, at the end of the tick.

/** A function that, called any number of times in a tick, runs `fn` once after it. */
export function coalesced(fn: () => void): () => void {
  let queued = false;
  return () => {
    if (queued) return;
    queued = true;
    queueMicrotask(() => { queued = false; fn(); });
  };
}
