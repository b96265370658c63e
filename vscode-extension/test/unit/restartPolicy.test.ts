import * as assert from 'node:assert/strict';
import { test } from 'node:test';
import { RestartPolicy } from '../../src/restartPolicy';

test('restarts up to the limit within the window, then gives up with a message', () => {
  const p = new RestartPolicy(2, 60_000);
  assert.deepEqual(p.crashed(0), { restart: true, attempt: 1, maxRestarts: 2 });
  assert.deepEqual(p.crashed(1000), { restart: true, attempt: 2, maxRestarts: 2 });
  const third = p.crashed(2000);
  assert.equal(third.restart, false);
  assert.match(third.restart ? '' : third.message, /crashed 3 times.*Restart Server/);
});

test('crashes older than the window are forgotten', () => {
  const p = new RestartPolicy(1, 60_000);
  assert.equal(p.crashed(0).restart, true);
  assert.equal(p.crashed(61_000).restart, true);
  assert.equal(p.crashed(62_000).restart, false);
});

test('reset gives a full budget again; zero restarts never restarts', () => {
  const p = new RestartPolicy(1, 60_000);
  p.crashed(0);
  p.reset();
  assert.equal(p.crashed(1).restart, true);
  assert.equal(new RestartPolicy(0, 60_000).crashed(0).restart, false);
});
