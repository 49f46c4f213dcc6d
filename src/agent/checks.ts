// Startup checks: each failure is one clear line and the agent refuses to
// start (docs/design.md 4, issue "agent service"). Pure readers of the machine.
import fs from 'node:fs';
import path from 'node:path';
import { cgroup2Root, cgroupId, MountError } from '../datapath/mounts.js';
import { native } from '../datapath/native.js';

export class StartupError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StartupError';
  }
}

/** Capability numbers (linux/capability.h) the agent needs, with why. */
export const REQUIRED_CAPS: { cap: number; name: string; why: string }[] = [
  { cap: 39, name: 'CAP_BPF', why: 'load programs and create maps' },
  { cap: 38, name: 'CAP_PERFMON', why: 'the programs read kernel memory (bpf_probe_read_kernel)' },
  { cap: 12, name: 'CAP_NET_ADMIN', why: 'sockops and sockhash programs' },
  { cap: 21, name: 'CAP_SYS_ADMIN', why: 'link to a cgroup, mount bpffs, enter network namespaces' },
];

export function effectiveCaps(status = fs.readFileSync('/proc/self/status', 'utf8')): bigint {
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(status);
  return m ? BigInt(`0x${m[1]}`) : 0n;
}

export function checkCapabilities(caps = effectiveCaps()): void {
  const missing = REQUIRED_CAPS.filter((c) => !(caps & (1n << BigInt(c.cap))));
  if (missing.length) {
    throw new StartupError(`missing capabilities: ${missing.map((c) => `${c.name} (${c.why})`).join(', ')}; run as root or grant them`);
  }
}

/** Minimum kernel for the helpers the programs call (bpf_get_netns_cookie in sockops/sk_msg: 5.15). */
export const MIN_KERNEL: [number, number] = [5, 15];

export function checkKernel(release = fs.readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim()): void {
  const m = /^(\d+)\.(\d+)/.exec(release);
  if (!m) throw new StartupError(`cannot read the kernel version from ${JSON.stringify(release)}`);
  const [maj, min] = [Number(m[1]), Number(m[2])];
  if (maj < MIN_KERNEL[0] || (maj === MIN_KERNEL[0] && min < MIN_KERNEL[1])) {
    throw new StartupError(`kernel ${release} is too old: the programs need ${MIN_KERNEL.join('.')}+ (bpf_get_netns_cookie in sockops and sk_msg); 6.18 is the verified kernel`);
  }
  if (!fs.existsSync('/sys/kernel/btf/vmlinux')) {
    throw new StartupError('kernel has no BTF (/sys/kernel/btf/vmlinux): the programs use CO-RE and need CONFIG_DEBUG_INFO_BTF');
  }
}

/** The cgroup to attach to: "auto" is the cgroup2 mount root from /proc/mounts. */
export function resolveCgroup(setting: string): string {
  try {
    return setting === 'auto' ? cgroup2Root() : setting;
  } catch (e) {
    if (e instanceof MountError) throw new StartupError(e.message);
    throw e;
  }
}

/** cgroup v2's root has id 1; a private cgroup namespace shows its own cgroup as "/". */
export const ROOT_CGROUP_ID = 1n;

export function checkHostCgroupRoot(dir: string, allowNonRoot = false): void {
  if (!fs.existsSync(path.join(dir, 'cgroup.procs'))) throw new StartupError(`${dir} is not a cgroup v2 directory`);
  const id = cgroupId(dir);
  if (id !== ROOT_CGROUP_ID && !allowNonRoot) {
    throw new StartupError(`${dir} is cgroup id ${id}, not the host's cgroup v2 root (id 1): inside a container with a private cgroup namespace the mount you see is your own, and programs attached there never see the pods; mount the host's cgroup2 root and set datapath.cgroup to it`);
  }
}

/**
 * Refuses a cgroup where someone else's sockops program is linked: a socket
 * takes one sk_msg program, so two such users would fight over every socket.
 */
export function checkNoForeignSockops(dir: string, ourProgIds: Set<number>): void {
  const n = native();
  const fd = n.openPath(dir);
  let ids: number[];
  try {
    ids = n.progQuery(fd, 'cgroup_sock_ops');
  } finally {
    n.closeFd(fd);
  }
  const foreign = ids.filter((id) => !ourProgIds.has(id));
  if (foreign.length) {
    throw new StartupError(`another sockops program is attached to ${dir} (prog id ${foreign.join(', ')}; see bpftool cgroup tree): a socket takes one sk_msg program, refusing to share it`);
  }
}
