// The keys of a mesh's maps as the kernel holds them (struct accel_conn_key),
// for tests that check which sockets are registered under which identity.
import path from 'node:path';
import { native } from '../../src/datapath/native.js';
import { EXPECTED_LAYOUTS, decodePodAddress } from '../../src/datapath/layout.js';
import type { Mesh } from './mesh.js';

export interface ConnKey { scope: bigint; clientIp: string; clientSeq: number; serverSeq: number; clientPort: number; role: number; raw: Buffer }

const at = (name: string) => EXPECTED_LAYOUTS.accel_conn_key!.members.find((m) => m.name === name)!.offset;

export function decodeConnKey(b: Buffer): ConnKey {
  return {
    scope: b.readBigUInt64LE(at('scope')),
    clientIp: decodePodAddress(b.subarray(at('client_ip'), at('client_ip') + 16)),
    clientSeq: b.readUInt32LE(at('client_seq')),
    serverSeq: b.readUInt32LE(at('server_seq')),
    clientPort: b.readUInt16LE(at('client_port')),
    role: b.readUInt8(at('role')),
    raw: b,
  };
}

/** Every key of one of the mesh generation's maps keyed by struct accel_conn_key. */
export function mapKeys(m: Mesh, map: 'sock_hash'): ConnKey[] {
  const n = native();
  const fd = n.objGet(path.join(m.dp.pinDir, `map_${map}`));
  try {
    const out: ConnKey[] = [];
    for (let k = n.mapNextKey(fd, null); k; k = n.mapNextKey(fd, k)) out.push(decodeConnKey(k));
    return out;
  } finally {
    n.closeFd(fd);
  }
}

export function sockHashKeys(m: Mesh): ConnKey[] {
  return mapKeys(m, 'sock_hash');
}

export function describeKey(k: ConnKey): string {
  return `scope ${k.scope} [${k.clientIp}]:${k.clientPort} seq ${k.clientSeq}/${k.serverSeq} role ${k.role}`;
}
