// What istiod knows of a pod (xds source) joined onto its kubernetes record.
// The kubernetes source stays the list of pods; istiod adds its tunnel
// protocol, canonical service and revision, and whether it is a mesh workload
// known on this node (only those pair across pods).
import type { Workload } from './workload.js';
import type { XdsSource } from './xds.js';

/** Istio's canonical-service labels, set by the injector; the fallback without istiod's record. */
export const LABEL_CANONICAL_NAME = 'service.istio.io/canonical-name';
export const LABEL_CANONICAL_REVISION = 'service.istio.io/canonical-revision';

export function joinMesh(workloads: Workload[], xds: Pick<XdsSource, 'health' | 'meshWorkloadOf'> | undefined): Workload[] {
  const state = xds?.health().state;
  return workloads.map((w): Workload => {
    const fromLabels = {
      canonicalService: w.labels[LABEL_CANONICAL_NAME] ?? '', canonicalRevision: w.labels[LABEL_CANONICAL_REVISION] ?? '',
    };
    // Local workloads are declared by the operator: known by definition.
    if (w.source !== 'kubernetes' || !xds) return { ...fromLabels, ...w, meshKnown: true };
    if (state === 'serving') {
      const m = xds.meshWorkloadOf(w);
      if (!m) return { ...w, ...fromLabels, meshKnown: false };
      return {
        ...w, meshKnown: true, tunnel: m.tunnel,
        canonicalService: m.canonicalName || fromLabels.canonicalService, canonicalRevision: m.canonicalRevision || fromLabels.canonicalRevision,
      };
    }
    // Before istiod's first answer membership is unknown (the reconciler keeps
    // what the kernel has: a restart stays hitless; a new pod stays in-pod);
    // once istiod is known not to answer, the API server's pods are the mesh.
    const joined: Workload = { ...w, ...fromLabels };
    if (state !== 'connecting') joined.meshKnown = true;
    return joined;
  });
}
