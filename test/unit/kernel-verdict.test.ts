// The rule the kernel suites apply to a kernel-dependent deviation: it passes
// only when the self-test names it and the agent therefore runs sidecar-only.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseVerdict, caughtBySelfTest, checkedCase } from '../kernel/verdict.js';

test('a verdict passed into a kernel-matrix guest is parsed, a malformed one is refused', () => {
  assert.deepEqual(parseVerdict('{"mode":"sidecar-only","failed":["fionread"]}'), { mode: 'sidecar-only', failed: ['fionread'] });
  assert.throws(() => parseVerdict('{"mode":"fast","failed":[]}'), /not a self-test verdict/);
  assert.throws(() => parseVerdict('{"mode":"full"}'), /not a self-test verdict/);
});

test('a deviation is caught only by its own check, and only when the agent then runs sidecar-only', () => {
  const v61 = { mode: 'sidecar-only' as const, failed: ['fionread'] };
  assert.match(caughtBySelfTest(v61, 'fionread') ?? '', /fails fionread/);
  assert.equal(caughtBySelfTest(v61, 'peek'), null, 'FIONREAD failing does not excuse MSG_PEEK');
  assert.equal(caughtBySelfTest(v61, 'halfclose'), null, 'no self-test check covers half-close: never excused');
  assert.equal(caughtBySelfTest({ mode: 'full', failed: [] }, 'fionread'), null);
  assert.match(caughtBySelfTest({ mode: 'sidecar-only', failed: ['fionread-tcp-queue'] }, 'fionread') ?? '', /fionread-tcp-queue/);
  assert.equal(caughtBySelfTest({ mode: 'refuse', failed: ['fionread', 'paired'] }, 'fionread'), null);
});

test('a deviation confined to FIONREAD readings belongs to the fionread check, any other to none', () => {
  const off = { client: [{ hdr: 64, inqBeforeClose: 1000, close: 0 }], server: [{ inEnd: 'ECONNRESET' }] };
  assert.equal(checkedCase('close-unread-s', { client: [{ hdr: 64, inqBeforeClose: 0, close: 0 }], server: [{ inEnd: 'ECONNRESET' }] }, off), 'fionread');
  assert.equal(checkedCase('close-unread-s', { client: [{ hdr: 64, inqBeforeClose: 0, close: 0 }], server: [{ inEnd: 'eof' }] }, off), null);
  assert.equal(checkedCase('peek', {}, off), 'peek');
  assert.equal(checkedCase('peek', { client: [{ hdr: 64, inqBeforeClose: 5, close: 0 }], server: [{ inEnd: 'ECONNRESET' }] }, off), 'fionread');
});
