// Sizes of the maps that bound how many sockets can be paired at once: the
// defaults of the BPF object, kept apart so the config schema can name them
// without loading the datapath.

/** sock_hash: sockets registered at once. */
export const DEFAULT_SOCK_HASH_ENTRIES = 65_536;
/** The most entries the agent asks of one map. */
export const MAX_MAP_ENTRIES = 1 << 23;

/** Sizes set before a new generation's maps are created; an adopted generation keeps its own. */
export interface MapCapacity {
  /** Sockets registered at once (each meshed connection uses up to six). */
  sockHash?: number;
}
