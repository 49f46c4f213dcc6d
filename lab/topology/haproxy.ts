// HAProxy configuration of a sidecar: Envoy's two listeners in TCP mode.
// Splicing stays off (nosplice): a receiver reading with splice() stalls on
// redirected bytes (docs/design.md 5, kernel facts).
//
// Polling is edge-triggered. In its default level-triggered mode HAProxy
// 2.6 drops EPOLLIN from its epoll interest while its buffer is full; if
// the socket then reaches TCP_CLOSE (its peer's FIN in, its own FIN acked),
// epoll still reports EPOLLHUP, alone, and raw_sock_to_buf takes "HUP
// without IN" for the end of the stream without reading what is still
// queued. Measured over plain TCP (datapath off) on Debian's 6.12.118 under
// qemu: a 64 MiB stream through both sidecars came up 4.7 MB short with a
// clean close. Edge-triggered, the interest is IN|RDHUP|OUT for good and a
// HUP always comes with IN.
import fs from 'node:fs';
import path from 'node:path';

/** The sidecar's admin socket, next to its pid file: `show events sessions` reads the session log. */
export const ADMIN_SOCKET = 'admin.sock';

export interface SidecarRoutes {
  /** Where outbound (15001) connections go, "host:port" per family. */
  upstream4?: string;
  upstream6?: string;
  /** The app's port in this pod, reached by inbound (15006) from 127.0.0.6 / ::6. */
  appPort?: number;
  /** HAProxy mode; "tcp" unless a bench needs "http". */
  mode?: 'tcp' | 'http';
  /**
   * mTLS between sidecars as Istio has it: outbound connections are TLS,
   * verified against this PEM (certificate and key, self-signed), and the
   * inbound listener terminates TLS with it.
   */
  tlsPem?: string;
}

/**
 * Connections a sidecar may hold: two descriptors each, within the open-file
 * hard limit it inherits (started unprivileged, it cannot raise it; a qemu
 * guest of the kernel matrix has 4096).
 */
export function sidecarMaxconn(limits = fs.readFileSync('/proc/self/limits', 'utf8')): number {
  const hard = /^Max open files\s+\S+\s+(\S+)/m.exec(limits)?.[1];
  const n = hard === undefined || hard === 'unlimited' ? Infinity : Number(hard);
  return Math.max(64, Math.min(8000, Math.floor((n - 64) / 2)));
}

export function haproxyConfig(routes: SidecarRoutes, pod: { ip4: string; ip6: string }, pidFile: string): string {
  const lines = [
    // Started as the proxy uid (Pod.startSidecar), as Istio starts Envoy: its
    // listeners, and so the sockets they accept, belong to that uid.
    'global',
    `  pidfile ${pidFile}`,
    `  maxconn ${sidecarMaxconn()}`,
    '  nbthread 1',
    '  nosplice',
    '  expose-experimental-directives',
    '  tune.fd.edge-triggered on',
    `  stats socket ${path.join(path.dirname(pidFile), ADMIN_SOCKET)} mode 600 level admin`,
    // Each TCP session's byte counts and how it ended, kept in memory: where a
    // stream came up short, this names the hop.
    'ring sessions',
    '  format raw',
    '  size 1048576',
    'defaults',
    `  mode ${routes.mode ?? 'tcp'}`,
    ...(routes.mode === 'http' ? [] : ['  log ring@sessions local0 info',
      '  log-format "%ft %ci:%cp -> %bi:%bp -> %si:%sp up=%U down=%B %Tt ms %ts"']),
    '  timeout connect 5s',
    '  timeout client 10m',
    '  timeout server 10m',
    // An upstream connection lives and dies with its downstream one, so no
    // pooled connection outlives a bench scenario or a test.
    ...(routes.mode === 'http' ? ['  http-reuse never'] : []),
  ];
  const upstreamTls = routes.tlsPem ? ` ssl verify required ca-file ${routes.tlsPem}` : '';
  const inboundTls = routes.tlsPem ? ` ssl crt ${routes.tlsPem}` : '';
  const frontend = (name: string, bind: string, backend: string) =>
    lines.push(`frontend ${name}`, `  bind ${bind}`, `  default_backend ${backend}`);
  if (routes.upstream4) {
    frontend('outbound4', '0.0.0.0:15001', 'upstream4');
    lines.push('backend upstream4', `  server u ${routes.upstream4}${upstreamTls}`);
  }
  if (routes.upstream6) {
    frontend('outbound6', ':::15001 v6only', 'upstream6');
    lines.push('backend upstream6', `  server u ${routes.upstream6}${upstreamTls}`);
  }
  if (routes.appPort) {
    frontend('inbound4', `0.0.0.0:15006${inboundTls}`, 'app4');
    lines.push('backend app4', `  server app ${pod.ip4}:${routes.appPort} source 127.0.0.6`);
    frontend('inbound6', `:::15006 v6only${inboundTls}`, 'app6');
    lines.push('backend app6', `  server app [${pod.ip6}]:${routes.appPort} source [::6]`);
  }
  return lines.join('\n') + '\n';
}
