// Network namespace identity: the kernel's netns cookie, the key of every
// per-workload entry in the datapath maps (bpf_get_netns_cookie in BPF).
import { native } from './native.js';

export function netnsCookieOfPath(nsPath: string): bigint {
  return native().netnsCookie(nsPath);
}

export function netnsCookieOfPid(pid: number): bigint {
  if (!Number.isInteger(pid) || pid <= 0) throw new RangeError(`bad pid ${pid}`);
  return native().netnsCookie(`/proc/${pid}/ns/net`);
}
