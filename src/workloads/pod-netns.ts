// The network namespace of a pod, found from its UID the way kubelet names
// cgroups, by scanning the host's /proc (mounted into the agent, e.g. at
// /host/proc):
//   cgroupfs driver: .../kubepods/burstable/pod<uid>/<container id>
//   systemd driver:  .../kubepods-burstable-pod<uid with _ for ->.slice/cri-containerd-<id>.scope
//                    (CRI-O: crio-<id>.scope; the same pod part)
// Any process of the pod will do, as long as it is not in the host's netns
// (a hostNetwork pod never is a candidate anyway).
import fs from 'node:fs';
import path from 'node:path';

const UID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Matches a cgroup path of the pod, under either cgroup driver. */
export function podCgroupMatcher(podUid: string): RegExp {
  if (!UID.test(podUid)) throw new RangeError(`not a pod UID: ${JSON.stringify(podUid)}`);
  const dashed = podUid;
  const underscored = podUid.replace(/-/g, '_');
  return new RegExp(`(?:/pod${dashed}(?:/|$))|(?:-pod${underscored}\\.slice(?:/|$))`);
}

function netnsId(procRoot: string, pid: string): string | undefined {
  try { return fs.readlinkSync(path.join(procRoot, pid, 'ns/net')); } catch { return undefined; }
}

/**
 * A pid of the pod outside the host's netns, or undefined when none runs (yet).
 * `hostNetns` is the host's netns link text (net:[inode]); by default that of
 * pid 1 under procRoot, the host's init when procRoot is the host's /proc.
 */
export function findPodProcess(podUid: string, procRoot = '/proc', hostNetns = netnsId(procRoot, '1')): number | undefined {
  const match = podCgroupMatcher(podUid);
  const hostNet = hostNetns;
  const pids = fs.readdirSync(procRoot).filter((d) => /^\d+$/.test(d)).sort((a, b) => Number(a) - Number(b));
  for (const pid of pids) {
    let cgroups: string;
    try { cgroups = fs.readFileSync(path.join(procRoot, pid, 'cgroup'), 'utf8'); } catch { continue; } // exited meanwhile
    if (!cgroups.split('\n').some((line) => match.test(line.slice(line.indexOf(':', line.indexOf(':') + 1) + 1)))) continue;
    const ns = netnsId(procRoot, pid);
    if (ns !== undefined && ns !== hostNet) return Number(pid);
  }
  return undefined;
}

export class PodNotRunningError extends Error {}

/** Path of the pod's netns (…/<pid>/ns/net); PodNotRunningError when no process of it runs. */
export function podNetnsPath(podUid: string, procRoot = '/proc', hostNetns?: string): string {
  const pid = findPodProcess(podUid, procRoot, hostNetns ?? netnsId(procRoot, '1'));
  if (pid === undefined) throw new PodNotRunningError(`pod ${podUid}: no running process in its cgroup (not started yet, or gone)`);
  return path.join(procRoot, String(pid), 'ns/net');
}
