import { test } from 'node:test';
import assert from 'node:assert/strict';
import { kernelSupportCheck, releaseVersion } from '../../src/agent/kernel-support.js';

test('kernel releases below the oldest verified one are refused by name, newer ones pass', () => {
  assert.deepEqual(releaseVersion('6.12.118+deb13-cloud-amd64'), [6, 12]);
  assert.equal(releaseVersion('linux'), null);
  const old = kernelSupportCheck('5.15.0-91-generic');
  assert.equal(old.ok, false);
  assert.equal(old.kind, 'required');
  assert.match(old.detail, /5\.15\.0-91-generic is older than 6\.1/);
  assert.equal(kernelSupportCheck('6.0.12').ok, false);
  for (const r of ['6.1.0-57-cloud-amd64', '6.6.80', '6.12.118+deb13-cloud-amd64', '6.18.44-fc-v669', '7.2.13+deb14-cloud-amd64', '10.0.1']) {
    assert.equal(kernelSupportCheck(r).ok, true, r);
  }
  assert.match(kernelSupportCheck('weird').detail, /cannot read a version/);
});
