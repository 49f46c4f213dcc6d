// What the kernel itself says about sockets and segments in a pod: the
// proof that a hop was redirected does not rest on our own counters.
import type { Pod } from '../../src/topology/topology.js';

export interface SsSocket {
  state: string;
  local: string;
  peer: string;
  bytesSent: number;
  bytesReceived: number;
  dataSegsOut: number;
}

function field(info: string, name: string): number {
  const m = new RegExp(`(?:^|\\s)${name}:(\\d+)`).exec(info);
  return m ? Number(m[1]) : 0; // ss leaves out counters that are zero
}

/** Every TCP socket of the pod's netns with its kernel counters (ss -tni). */
export async function ssSockets(pod: Pod): Promise<SsSocket[]> {
  const { stdout } = await pod.exec('ss', ['-tniaH']);
  const lines = stdout.split('\n');
  const out: SsSocket[] = [];
  for (let i = 0; i < lines.length; i++) {
    const cols = lines[i]!.trim().split(/\s+/);
    if (cols.length < 5 || /^\s/.test(lines[i]!)) continue;
    const info = lines[i + 1] && /^\s/.test(lines[i + 1]!) ? lines[i + 1]! : '';
    out.push({
      state: cols[0]!, local: cols[3]!, peer: cols[4]!,
      bytesSent: field(info, 'bytes_sent'), bytesReceived: field(info, 'bytes_received'),
      dataSegsOut: field(info, 'data_segs_out'),
    });
  }
  return out;
}

/** Tcp OutSegs of the pod's netns (/proc/net/snmp, per network namespace). */
export async function tcpOutSegs(pod: Pod): Promise<number> {
  const { stdout } = await pod.exec('cat', ['/proc/net/snmp']);
  const tcp = stdout.split('\n').filter((l) => l.startsWith('Tcp:'));
  const names = tcp[0]!.split(/\s+/);
  const values = tcp[1]!.split(/\s+/);
  return Number(values[names.indexOf('OutSegs')]);
}

/** Strips brackets and v4-mapped prefixes so addresses compare as written in tests. */
export function addr(s: string): string {
  return s.replace(/^\[::ffff:([\d.]+)\]/, '$1').replace(/^\[(.*)\](:\d+)$/, '$1$2');
}
