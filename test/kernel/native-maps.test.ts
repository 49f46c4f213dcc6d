// The addon's map operations against real maps of the loaded object (loaded,
// never attached): every size comes from the kernel, a buffer of another
// length is refused before the syscall, and a lookup's buffer holds all that
// the kernel writes (per-CPU maps: one 8-aligned slot per possible CPU).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { native, defaultObjectPath, isSizeMismatch, BPF_ANY, type LoadedObject } from '../../src/datapath/native.js';
import { encodeU32, encodeU64 } from '../../src/datapath/layout.js';
import { kernelSkip, assertKernelAccess } from './gate.js';

const roundUp8 = (n: number) => Math.ceil(n / 8) * 8;

describe('map operations take their sizes from the kernel', { skip: kernelSkip }, () => {
  const n = native();
  let obj: LoadedObject;
  const map = (name: string): number => {
    const fd = obj.maps[name];
    assert.ok(fd !== undefined, `the object has a map ${name}`);
    return fd;
  };

  before(() => {
    assertKernelAccess();
    obj = n.loadObject(defaultObjectPath);
  });
  after(() => {
    if (obj) for (const fd of [...Object.values(obj.maps), ...Object.values(obj.progs)]) n.closeFd(fd);
  });

  test('a per-CPU lookup returns round_up(value_size, 8) bytes for every possible CPU', () => {
    const cpus = n.possibleCpus();
    for (const name of ['counters', 'netns_counters']) {
      const info = n.mapInfo(map(name));
      assert.equal(info.perCpu, true, name);
      assert.equal(info.lookupSize, roundUp8(info.valueSize) * cpus, name);
    }
    const v = n.mapLookup(map('counters'), encodeU32(0));
    assert.ok(v);
    assert.equal(v.length, roundUp8(n.mapInfo(map('counters')).valueSize) * cpus);

    const nc = map('netns_counters');
    const key = encodeU64(0xfeedn);
    const info = n.mapInfo(nc);
    const value = Buffer.alloc(info.lookupSize);
    for (let cpu = 0; cpu < cpus; cpu++) value.writeBigUInt64LE(BigInt(cpu + 1), cpu * roundUp8(info.valueSize));
    n.mapUpdate(nc, key, value, BPF_ANY);
    const back = n.mapLookup(nc, key);
    assert.deepEqual(back, value, 'every CPU slot written and read back whole');
    assert.equal(n.mapDelete(nc, key), true);
  });

  test('a size JavaScript passes is never used for the kernel\'s buffer', () => {
    // The old signature was mapLookup(fd, key, valueSize): the kernel wrote
    // its own size into a buffer of the caller's.
    const lookup = n.mapLookup as unknown as (fd: number, key: Buffer, size: number) => Buffer | null;
    const v = lookup(map('counters'), encodeU32(0), 1);
    assert.equal(v?.length, n.mapInfo(map('counters')).lookupSize);
    const next = (n.mapNextKey as unknown as (fd: number, key: Buffer | null, size: number) => Buffer | null)(map('counters'), null, 1);
    assert.equal(next?.length, n.mapInfo(map('counters')).keySize);
  });

  test('a key or value of another length is refused with a typed error, before the syscall', () => {
    const policy = map('netns_policy');
    const info = n.mapInfo(policy);
    const refused = (what: 'key' | 'value', expected: number, actual: number) => (e: unknown) => {
      assert.ok(isSizeMismatch(e), `a size mismatch error: ${String(e)}`);
      assert.equal(e.errno, 22);
      assert.equal(e.code, 'EINVAL');
      assert.deepEqual(e.sizeMismatch, { what, map: 'netns_policy', expected, actual });
      return true;
    };
    const shortKey = Buffer.alloc(info.keySize - 4);
    assert.throws(() => n.mapLookup(policy, shortKey), refused('key', info.keySize, shortKey.length));
    assert.throws(() => n.mapDelete(policy, shortKey), refused('key', info.keySize, shortKey.length));
    assert.throws(() => n.mapNextKey(policy, shortKey), refused('key', info.keySize, shortKey.length));
    assert.throws(() => n.mapUpdate(policy, shortKey, Buffer.alloc(info.valueSize), BPF_ANY), refused('key', info.keySize, shortKey.length));
    // A short value would have the kernel read past the caller's buffer.
    const key = encodeU64(0xbeefn);
    assert.throws(() => n.mapUpdate(policy, key, Buffer.alloc(info.valueSize - 1), BPF_ANY), refused('value', info.valueSize, info.valueSize - 1));
    assert.throws(() => n.mapUpdate(policy, key, Buffer.alloc(info.valueSize + 8), BPF_ANY), refused('value', info.valueSize, info.valueSize + 8));
    assert.equal(n.mapLookup(policy, key), null, 'nothing was written');
    // A per-CPU map takes every CPU's slot, not one value.
    const nc = map('netns_counters');
    const ncInfo = n.mapInfo(nc);
    if (ncInfo.lookupSize !== ncInfo.valueSize) {
      assert.throws(() => n.mapUpdate(nc, key, Buffer.alloc(ncInfo.valueSize), BPF_ANY), (e: unknown) => isSizeMismatch(e) && e.sizeMismatch.expected === ncInfo.lookupSize);
    }
  });

  test('a key that is not a Buffer is a TypeError', () => {
    const lookup = n.mapLookup as unknown as (fd: number, key: unknown) => Buffer | null;
    assert.throws(() => lookup(map('netns_policy'), 'abcdefgh'), TypeError);
    assert.throws(() => lookup(map('netns_policy'), 42), TypeError);
  });
});
