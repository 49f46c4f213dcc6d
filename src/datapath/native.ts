// Typed view of the native addon (native/src/addon.cc). The addon throws
// Errors carrying `op`, `errno` and `code`; isNativeError narrows to them.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

export type AttachType = 'cgroup_sock_ops' | 'sk_msg_verdict' | 'cgroup_inet_ingress';

export interface LoadedObject {
  maps: Record<string, number>;
  progs: Record<string, number>;
}

export interface StructLayout {
  size: number;
  members: { name: string; offset: number; size: number }[];
}

export interface MapInfo {
  id: number; type: number; name: string; keySize: number; valueSize: number; maxEntries: number;
  /** A per-CPU map: a lookup returns one slot of round_up(valueSize, 8) bytes per possible CPU. */
  perCpu: boolean;
  /** Bytes one lookup returns (and one update takes), as the kernel writes them. */
  lookupSize: number;
  /** The kernel BTF object of the map's types (0: none), and its key and value type ids. */
  btfId: number;
  btfKeyTypeId: number;
  btfValueTypeId: number;
}

export interface ProgInfo { id: number; type: number; name: string }
export interface LinkInfo { id: number; progId: number; type: number; cgroupId?: bigint }

export interface NativeAddon {
  /** Loads an object; `maxEntries` sizes its maps by name before they are created. */
  loadObject(path: string, maxEntries?: Record<string, number>): LoadedObject;
  /**
   * Loads a BPF iterator object with its maps named in `reuse` replaced by
   * those (e.g. pinned) maps, and links program `progName`: the link's fd.
   */
  iterLink(objPath: string, progName: string, reuse: Record<string, number>): number;
  /** Everything the iterator writes, created inside the netns at `netnsPath` (null: this process's). */
  iterRead(linkFd: number, netnsPath: string | null): Buffer;
  /** A struct's layout in an object's BTF (a path) or in BTF the kernel holds (an id: a map's btfId). */
  structLayout(btf: string | number, structName: string): StructLayout;
  /** An enum's enumerators in declaration order, or null when that BTF has none of that name. */
  enumValues(btf: string | number, enumName: string): { name: string; value: number }[] | null;
  objPin(fd: number, path: string): void;
  objGet(path: string): number;
  closeFd(fd: number): void;
  openPath(path: string): number;
  linkCgroup(progFd: number, cgroupPath: string, type: AttachType): number;
  linkDetach(linkFd: number): void;
  progAttach(progFd: number, targetFd: number, type: AttachType): void;
  progDetach(progFd: number, targetFd: number, type: AttachType): void;
  progQuery(targetFd: number, type: AttachType): number[];
  progInfo(fd: number): ProgInfo;
  mapInfo(fd: number): MapInfo;
  linkInfo(fd: number): LinkInfo;
  /**
   * Map operations take their sizes from the kernel (the map's info): a key
   * or value of another length is refused (EINVAL, `sizeMismatch` set), and
   * a lookup returns a buffer of the map's lookupSize.
   */
  mapLookup(fd: number, key: Buffer): Buffer | null;
  mapUpdate(fd: number, key: Buffer, value: Buffer, flags: number): void;
  mapDelete(fd: number, key: Buffer): boolean;
  mapNextKey(fd: number, key: Buffer | null): Buffer | null;
  /** Keys in the map, walked in C (one syscall per key); at most its max_entries. */
  mapKeyCount(fd: number): number;
  possibleCpus(): number;
  netnsCookie(nsPath: string): bigint;
  /** Every interface address of the netns at nsPath (getifaddrs there), as inet_ntop writes them. */
  netnsAddresses(nsPath: string): string[];
  mountBpffs(path: string): void;
  fionread(fd: number): number;
  /** A blocking TCP socket connected to ipv4:port (the self-test's blocking reader). */
  connectBlocking(ipv4: string, port: number): number;
  /** Bytes splice(2) took from the socket without waiting (discarded), or -1 on EAGAIN. */
  spliceCount(fd: number, len: number): number;
  /** What recv(2) with MSG_DONTWAIT (and MSG_PEEK when `peek`) returns; empty on EAGAIN. */
  recvDontwait(fd: number, len: number, peek: boolean): Buffer;
  /** Bytes accepted, or -1 when the kernel said EAGAIN. */
  sendDontwait(fd: number, buf: Buffer): number;
  setsockoptInt(fd: number, level: number, name: number, value: number): void;
  getsockoptInt(fd: number, level: number, name: number): number;
}

export interface NativeError extends Error {
  op: string;
  errno: number;
  code: string;
}

export function isNativeError(e: unknown): e is NativeError {
  return e instanceof Error && typeof (e as Partial<NativeError>).errno === 'number'
    && typeof (e as Partial<NativeError>).op === 'string';
}

/** A key or value buffer whose length is not the map's (the kernel's sizes). */
export interface SizeMismatchError extends NativeError {
  sizeMismatch: { what: 'key' | 'value'; map: string; expected: number; actual: number };
}

export function isSizeMismatch(e: unknown): e is SizeMismatchError {
  if (!isNativeError(e)) return false;
  const m = (e as Partial<SizeMismatchError>).sizeMismatch;
  return typeof m === 'object' && m !== null && typeof m.expected === 'number' && typeof m.actual === 'number';
}

export const BPF_ANY = 0;
export const BPF_NOEXIST = 1;

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const addonPath = path.join(repoRoot, 'native/build/Release/sidecar_accel_native.node');
export const defaultObjectPath = path.join(repoRoot, 'build/bpf/sidecar_accel.bpf.o');
/** The read-only connection iterator (bpf/conns_iter.bpf.c). */
export const connsIterObjectPath = path.join(repoRoot, 'build/bpf/conns_iter.bpf.o');

let cached: NativeAddon | undefined;

export function native(): NativeAddon {
  if (!cached) {
    const require = createRequire(import.meta.url);
    try {
      cached = require(addonPath) as NativeAddon;
    } catch (e) {
      throw new Error(`native addon not built (${addonPath}): run npm run build`, { cause: e });
    }
  }
  return cached;
}
