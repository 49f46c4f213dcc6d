// Generations pinned by builds with other map layouts, read by this build:
// each is decoded by its own BTF (the kernel keeps it with its maps), its
// counters by name where its BTF names them, and said plainly unreadable
// where it does not. The old objects are test/bpf/old-layout.bpf.c, loaded
// and pinned the way an older agent pinned its generation (never attached).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { native, BPF_ANY } from '../../src/datapath/native.js';
import { Datapath, GenerationLayoutError } from '../../src/datapath/datapath.js';
import { encodeU32, encodeU64 } from '../../src/datapath/layout.js';
import { cgroup2Root } from '../../src/datapath/mounts.js';
import { datapathStatus, statusText } from '../../src/cli/status.js';
import { kernelSkip, assertKernelAccess } from './gate.js';

const buildTest = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../build/test');
const MAPS = ['sock_hash', 'sock_state', 'netns_policy', 'accel_cfg', 'counters', 'netns_counters', 'listener_style'];
const PROGS = ['accel_sockops', 'accel_msg', 'accel_ingress'];

describe('generations built from older layouts', { skip: kernelSkip }, () => {
  const n = native();
  const tag = crypto.randomBytes(3).toString('hex');
  const pinRoot = `/sys/fs/bpf/sagen${tag}`;
  let cgroup: string;
  let cpus: number;

  before(() => {
    assertKernelAccess();
    cgroup = path.join(cgroup2Root(), `sagen${tag}`);
    fs.mkdirSync(cgroup);
    fs.mkdirSync(pinRoot);
    cpus = n.possibleCpus();
  });
  after(() => {
    fs.rmSync(pinRoot, { recursive: true, force: true });
    fs.rmdirSync(cgroup);
  });

  /** Loads an old object and pins it as a retired generation; returns its pin dir. */
  function pinOld(object: string, gen: string): string {
    const loaded = n.loadObject(path.join(buildTest, object));
    const dir = path.join(pinRoot, `gen-${gen}`);
    fs.mkdirSync(dir);
    try {
      for (const m of MAPS) n.objPin(loaded.maps[m]!, path.join(dir, `map_${m}`));
      for (const p of PROGS) n.objPin(loaded.progs[p]!, path.join(dir, `prog_${p}`));
    } finally {
      for (const fd of [...Object.values(loaded.maps), ...Object.values(loaded.progs)]) n.closeFd(fd);
    }
    return dir;
  }

  /** A per-CPU value of `slots` u64 per CPU, `set(cpu, slot)` giving each. */
  function perCpu(fd: number, set: (cpu: number, slot: number) => bigint): Buffer {
    const info = n.mapInfo(fd);
    const slotBytes = info.lookupSize / cpus;
    const b = Buffer.alloc(info.lookupSize);
    for (let cpu = 0; cpu < cpus; cpu++) for (let i = 0; i < slotBytes / 8; i++) b.writeBigUInt64LE(set(cpu, i), cpu * slotBytes + 8 * i);
    return b;
  }

  test('counters not named in its BTF: said plainly unreadable, never mislabelled', () => {
    const dir = pinOld('old-layout.bpf.o', `oldunnamed${tag}`);
    const counters = n.objGet(path.join(dir, 'map_counters'));
    const nc = n.objGet(path.join(dir, 'map_netns_counters'));
    try {
      // Slot 5 held redirectedBytes in that build; this build cannot know it.
      n.mapUpdate(counters, encodeU32(5), perCpu(counters, () => 7n), BPF_ANY);
      n.mapUpdate(nc, encodeU64(42n), perCpu(nc, (_c, i) => BigInt(i)), BPF_ANY);
    } finally {
      n.closeFd(counters);
      n.closeFd(nc);
    }
    const dp = Datapath.openPinned(dir, cgroup);
    try {
      assert.match(dp.layout.countersUnreadable ?? '', /does not name its counters/);
      assert.throws(() => dp.counters(), (e: unknown) => e instanceof GenerationLayoutError && /counters cannot be read by this build/.test(e.message));
      assert.throws(() => dp.netnsCounters(42n), GenerationLayoutError);
      // Its config and policies cannot be checked either (no flag enums in its BTF).
      assert.throws(() => dp.config(), (e: unknown) => e instanceof GenerationLayoutError && /enum accel_cfg_flag: not in its BTF/.test(e.message));
      assert.throws(() => dp.enable(43n), GenerationLayoutError);
      // Draining needs keys only, which every generation shares.
      assert.deepEqual(dp.enabledNetnsCookies(), []);
    } finally {
      dp.close();
    }
    const st = datapathStatus(pinRoot, cgroup).find((g) => g.pinDir === dir);
    assert.ok(st);
    assert.equal(st.counters, null);
    assert.equal(st.crossPod, null);
    const text = statusText([st], pinRoot);
    assert.match(text, /counters cannot be read by this build: its BTF does not name its counters/);
    assert.match(text, /built with other map layouts than this build/);
    fs.rmSync(dir, { recursive: true });
  });

  test('counters named in its BTF: each read from its own slot, whatever the order and count', () => {
    const dir = pinOld('old-layout-named.bpf.o', `oldnamed${tag}`);
    const counters = n.objGet(path.join(dir, 'map_counters'));
    const nc = n.objGet(path.join(dir, 'map_netns_counters'));
    const policy = n.objGet(path.join(dir, 'map_netns_policy'));
    try {
      // That build's order: seen, redirected bytes, paired, (retired), no peer.
      n.mapUpdate(counters, encodeU32(1), perCpu(counters, (cpu) => (cpu === 0 ? 100n : 20n)), BPF_ANY);
      n.mapUpdate(counters, encodeU32(2), perCpu(counters, () => 3n), BPF_ANY);
      n.mapUpdate(counters, encodeU32(3), perCpu(counters, () => 999n), BPF_ANY);
      n.mapUpdate(nc, encodeU64(42n), perCpu(nc, (cpu, i) => (i === 4 ? 5n : i === 1 ? BigInt(1000 * (cpu + 1)) : 0n)), BPF_ANY);
      // netns 42 enabled (flags = ACCEL_NETNS_ENABLED), no excluded ports.
      n.mapUpdate(policy, encodeU64(42n), Buffer.alloc(40, 0).fill(1, 0, 1), BPF_ANY);
    } finally {
      n.closeFd(counters);
      n.closeFd(nc);
      n.closeFd(policy);
    }
    const dp = Datapath.openPinned(dir, cgroup);
    try {
      assert.equal(dp.layout.countersUnreadable, null);
      assert.deepEqual(dp.layout.problems, []);
      assert.ok(dp.layout.countersMissing.includes('tcpHeldBack') && !dp.layout.countersMissing.includes('socketsPaired'));
      const c = dp.counters();
      assert.equal(c.redirectedBytes, 100n + 20n * BigInt(cpus - 1));
      assert.equal(c.socketsPaired, 3n * BigInt(cpus));
      assert.equal(c.redirectedMessages, 0n, 'slot 3 (a counter this build does not have) is not taken for another');
      assert.equal(c.tcpHeldBack, 0n);
      const w = dp.netnsCounters(42n);
      assert.ok(w);
      assert.equal(w.fallbackNoPeer, 5n * BigInt(cpus));
      assert.equal(w.redirectedBytes, BigInt(Array.from({ length: cpus }, (_x, cpu) => 1000 * (cpu + 1)).reduce((a, b) => a + b, 0)));
      assert.equal(w.socketsPaired, 0n);
      assert.deepEqual([...dp.enabledNetns().keys()], [42n]);
    } finally {
      dp.close();
    }
    const st = datapathStatus(pinRoot, cgroup).find((g) => g.pinDir === dir);
    assert.equal(st?.counters?.socketsPaired, 3n * BigInt(cpus));
    assert.match(statusText([st!], pinRoot), /counters this generation does not have \(shown as 0\): .*tcpHeldBack/);
    fs.rmSync(dir, { recursive: true });
  });
});
