// The bench's pods, all on one node bridge (docs/design.md 7):
//   mesh:  client pod -> its sidecar -> server pod's sidecar -> app, TCP mode
//          (rr, crr, stream), Istio's REDIRECT rules, HAProxy as uid 1337;
//   http:  the same in HTTP mode with TLS between the sidecars (Istio's mTLS),
//          the app an HTTP server;
//   plain: two pods without capture or sidecar (nomesh, accel-unpaired).
// Apps are not the proxy: they run as nobody (65534).
import fs from 'node:fs';
import { Topology, PROXY_UID, type Pod } from '../../lab/topology/topology.js';
import { run } from '../../src/util/exec.js';

export const APP_PORT = 8080;
/** The plain server pod's HTTP app (its 8080 is the rr servers' turn). */
export const PLAIN_HTTP_PORT = 8081;

export interface PodPair { client: Pod; server: Pod }

export interface BenchPods {
  topo: Topology;
  mesh: PodPair;
  http: PodPair;
  plain: PodPair;
}

export async function createBenchPods(): Promise<BenchPods> {
  const topo = await Topology.create({ label: 'bench' });
  try {
    const add = async (name: string) => {
      const p = await topo.addPod(name);
      // crr opens thousands of connections a second from one address to one
      // port: reuse TIME_WAIT ports (timestamps make it safe), in every pod alike.
      await p.exec('sysctl', ['-q', '-w', 'net.ipv4.tcp_tw_reuse=1', 'net.ipv4.ip_local_port_range=1024 65000']);
      return p;
    };
    const mesh = { client: await add('ma'), server: await add('mb') };
    const http = { client: await add('ha'), server: await add('hb') };
    const plain = { client: await add('na'), server: await add('nb') };
    const pem = await selfSignedPem(topo);
    for (const [pair, mode] of [[mesh, 'tcp'], [http, 'http']] as const) {
      for (const p of [pair.client, pair.server]) await p.installIstioCapture();
      const other = (p: Pod) => (p === pair.client ? pair.server : pair.client);
      for (const p of [pair.client, pair.server]) {
        await p.startSidecar({
          upstream4: `${other(p).ip4}:${APP_PORT}`, upstream6: `[${other(p).ip6}]:${APP_PORT}`, appPort: APP_PORT,
          mode, ...(mode === 'http' ? { tlsPem: pem } : {}),
        });
      }
    }
    await startHttpApp(http.server, APP_PORT);
    await startHttpApp(plain.server, PLAIN_HTTP_PORT);
    return { topo, mesh, http, plain };
  } catch (e) {
    await topo.destroy();
    throw e;
  }
}

/** A self-signed certificate and key in one PEM, the sidecars' mTLS identity. */
async function selfSignedPem(topo: Topology): Promise<string> {
  const key = topo.file('tls.key');
  const crt = topo.file('tls.crt');
  await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', key, '-out', crt, '-days', '2', '-subj', '/CN=sidecar-accel-bench']);
  const pem = topo.file('tls.pem');
  fs.writeFileSync(pem, fs.readFileSync(crt, 'utf8') + fs.readFileSync(key, 'utf8'), { mode: 0o600 });
  fs.chownSync(pem, PROXY_UID, PROXY_UID); // the sidecars read it as the proxy uid
  return pem;
}

/**
 * The HTTP app: HAProxy answering every request itself with a short 200, a
 * server whose cost is small and the same in every scenario.
 */
async function startHttpApp(pod: Pod, port: number): Promise<void> {
  await pod.startHaproxy('app', [
    'global', '  uid 65534', '  gid 65534', '  maxconn 8000', '  nbthread 1',
    `  pidfile ${pod.topo.file(`${pod.name}-app.pid`)}`,
    'defaults', '  mode http', '  timeout connect 5s', '  timeout client 10m', '  timeout server 10m',
    'frontend app', `  bind 0.0.0.0:${port}`, '  http-request return status 200 content-type text/plain string ok',
    '',
  ].join('\n'));
}
