// The standard topology of tests, demo and bench: client pod "a" calls a
// service whose endpoint is pod "b"; each pod has Istio's capture rules and
// a sidecar (HAProxy as uid 1337) routing outbound to the other pod's app
// port and inbound to its own.
import { Topology, SERVICE_VIP4, SERVICE_VIP6, type Pod } from './topology.js';

export const APP_PORT = 8080;
export const SERVICE_PORT = 80;

export interface SidecarPair { topo: Topology; a: Pod; b: Pod }

export async function createSidecarPair(label: string, mode: 'tcp' | 'http' = 'tcp'): Promise<SidecarPair> {
  const topo = await Topology.create({ label });
  try {
    const a = await topo.addPod('a');
    const b = await topo.addPod('b');
    for (const p of [a, b]) await p.installIstioCapture();
    await a.startSidecar({ upstream4: `${b.ip4}:${APP_PORT}`, upstream6: `[${b.ip6}]:${APP_PORT}`, appPort: APP_PORT, mode });
    await b.startSidecar({ upstream4: `${a.ip4}:${APP_PORT}`, upstream6: `[${a.ip6}]:${APP_PORT}`, appPort: APP_PORT, mode });
    return { topo, a, b };
  } catch (e) {
    await topo.destroy();
    throw e;
  }
}

/** "host:port" of the service as the client app dials it. */
export function serviceAddress(family: 4 | 6 = 4): string {
  return family === 4 ? `${SERVICE_VIP4}:${SERVICE_PORT}` : `[${SERVICE_VIP6}]:${SERVICE_PORT}`;
}
