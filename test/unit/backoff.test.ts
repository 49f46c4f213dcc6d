// The one backoff policy: doubling from initialMs, capped at maxMs, jittered
// to [50%, 100%] of the step, reset by a success.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Backoff, backoffDelay } from '../../src/util/backoff.js';

const P = { initialMs: 100, maxMs: 1000 };

test('doubles per consecutive failure up to the cap; the jitter spans [50%, 100%] of each step', () => {
  const low = new Backoff(P, () => 0);
  assert.deepEqual([1, 2, 3, 4, 5, 6].map(() => low.failed()), [50, 100, 200, 400, 500, 500]);
  const high = new Backoff(P, () => 0.999999);
  assert.deepEqual([1, 2, 3, 4, 5, 6].map(() => high.failed()), [100, 200, 400, 800, 1000, 1000]);
  assert.equal(backoffDelay(P, 3, () => 0.5), 300);
  assert.equal(backoffDelay(P, 0, () => 0.999999), 100, 'no failure yet counts as the first');
});

test('a success resets it: the next failure waits about initialMs again', () => {
  const b = new Backoff(P, () => 0.999999);
  b.failed(); b.failed(); b.failed();
  assert.equal(b.failures, 3);
  b.reset();
  assert.equal(b.failures, 0);
  assert.equal(b.failed(), 100);
});

test('with the real random source every delay stays within its step', () => {
  const b = new Backoff({ initialMs: 10, maxMs: 80 });
  for (let n = 1; n <= 50; n++) {
    const step = Math.min(80, 10 * 2 ** (n - 1));
    const d = b.failed();
    assert.ok(d >= step / 2 && d <= step, `failure ${n}: ${d} ms outside [${step / 2}, ${step}]`);
  }
});

test('a policy that cannot back off is refused by name', () => {
  assert.throws(() => new Backoff({ initialMs: 0, maxMs: 10 }), /backoff: need 0 < initialMs <= maxMs, got 0 and 10/);
  assert.throws(() => new Backoff({ initialMs: 20, maxMs: 10 }), /got 20 and 10/);
  assert.throws(() => new Backoff({ initialMs: Number.NaN, maxMs: 10 }), /got NaN and 10/);
});
