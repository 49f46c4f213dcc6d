// What the kernel itself says about sockets, segments and CPU time: the
// proof that a hop was redirected (tests, bench) does not rest on our own
// counters.
import fs from 'node:fs';
import path from 'node:path';
import { run } from '../../src/util/exec.js';
import type { Pod } from '../topology/topology.js';

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

/** One counter of a /proc/net/{snmp,netstat} table ("Tcp:" + "OutSegs", ...), as the pod's netns has it. */
async function netCounter(pod: Pod, file: 'snmp' | 'netstat', table: string, name: string): Promise<number> {
  const { stdout } = await pod.exec('cat', [`/proc/net/${file}`]);
  const rows = stdout.split('\n').filter((l) => l.startsWith(`${table}:`));
  const names = rows[0]?.split(/\s+/) ?? [];
  const values = rows[1]?.split(/\s+/) ?? [];
  const i = names.indexOf(name);
  if (i < 0) throw new Error(`no ${table} ${name} in /proc/net/${file} of ${pod.netns}`);
  return Number(values[i]);
}

/** Tcp OutSegs of the pod's netns (every segment, control ones included). */
export function tcpOutSegs(pod: Pod): Promise<number> {
  return netCounter(pod, 'snmp', 'Tcp', 'OutSegs');
}

/** Connections the pod's netns opened, actively and passively (Tcp ActiveOpens + PassiveOpens): one SYN or SYN-ACK each. */
export async function tcpOpens(pod: Pod): Promise<number> {
  return await netCounter(pod, 'snmp', 'Tcp', 'ActiveOpens') + await netCounter(pod, 'snmp', 'Tcp', 'PassiveOpens');
}

/** Segments that carried new data over TCP in the pod's netns (TcpExt TCPOrigDataSent). */
export function tcpDataSegments(pod: Pod): Promise<number> {
  return netCounter(pod, 'netstat', 'TcpExt', 'TCPOrigDataSent');
}

/** Bytes and packets a network device of the pod's netns has sent (ip -s link: the kernel's own counters). */
export async function linkTx(pod: Pod, dev: string): Promise<{ bytes: number; packets: number }> {
  const { stdout } = await pod.exec('ip', ['-s', '-j', 'link', 'show', 'dev', dev]);
  const tx = (JSON.parse(stdout) as { stats64?: { tx?: { bytes?: number; packets?: number } } }[])[0]?.stats64?.tx;
  if (typeof tx?.bytes !== 'number' || typeof tx.packets !== 'number') throw new Error(`no tx counters for ${dev} in ${pod.netns}: ${stdout.slice(0, 200)}`);
  return { bytes: tx.bytes, packets: tx.packets };
}

/** Machine-wide CPU time from /proc/stat, in clock ticks: busy includes irq and softirq. */
export interface CpuTicks { busy: number; total: number }

export function cpuTicks(): CpuTicks {
  const cols = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal (guest time is inside user)
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = cols;
  const busy = user + nice + system + irq + softirq + steal;
  return { busy, total: busy + idle + iowait };
}

/** Strips brackets and v4-mapped prefixes so addresses compare as written in tests. */
/**
 * kernel.bpf_stats_enabled: with it on, every BPF program run reads the clock
 * twice, a cost only measurements with our programs carry. A kernel without
 * the sysctl keeps no such statistics.
 */
export function bpfStatsEnabled(): boolean {
  try {
    return fs.readFileSync('/proc/sys/kernel/bpf_stats_enabled', 'utf8').trim() !== '0';
  } catch {
    return false;
  }
}

/** What the kernel counted for one BPF program while kernel.bpf_stats_enabled was on. */
export interface ProgramRunStats { runs: number; ns: number }

/**
 * Run counts and time of every program pinned under `dir` (a generation's
 * pins: prog_<name>), by program name, from bpftool.
 */
export async function pinnedProgramStats(dir: string): Promise<Map<string, ProgramRunStats>> {
  const out = new Map<string, ProgramRunStats>();
  for (const f of fs.readdirSync(dir).filter((n) => n.startsWith('prog_'))) {
    const r = await run('bpftool', ['-j', 'prog', 'show', 'pinned', path.join(dir, f)]);
    const p = JSON.parse(r.stdout) as { run_cnt?: number; run_time_ns?: number };
    out.set(f.slice('prog_'.length), { runs: p.run_cnt ?? 0, ns: p.run_time_ns ?? 0 });
  }
  return out;
}

export function addr(s: string): string {
  return s.replace(/^\[::ffff:([\d.]+)\]/, '$1').replace(/^\[(.*)\](:\d+)$/, '$1$2');
}
