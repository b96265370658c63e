import * as assert from 'node:assert/strict';
import { test } from 'node:test';
import { initialStatus, nextStatus, parseServerStatus, present, StatusEvent, StatusState } from '../../src/status';

const run = (events: StatusEvent[], enabled = true): StatusState => events.reduce(nextStatus, initialStatus(enabled));

test('starting, loading, ready, generating, ready', () => {
  const seen = [
    { kind: 'server', state: 'loading', message: 'loading the default model' },
    { kind: 'server', state: 'ready' },
    { kind: 'server', state: 'generating' },
    { kind: 'server', state: 'ready' },
  ].reduce<StatusState[]>((acc, e) => [...acc, nextStatus(acc[acc.length - 1], e as StatusEvent)], [initialStatus(true)])
    .map((s) => s.phase);
  assert.deepEqual(seen, ['starting', 'loading', 'ready', 'generating', 'ready']);
  assert.match(present(run([{ kind: 'server', state: 'loading' }])).text, /loading model/);
});

test('toggling off shows disabled, on shows ready again', () => {
  const off = run([{ kind: 'server', state: 'ready' }, { kind: 'toggled', enabled: false }]);
  assert.equal(off.phase, 'disabled');
  assert.match(present(off).tooltip, /turn completion on/);
  assert.equal(nextStatus(off, { kind: 'toggled', enabled: true }).phase, 'ready');
  // a "ready" from the server while the user has completion off stays "disabled"
  assert.equal(nextStatus(off, { kind: 'server', state: 'ready' }).phase, 'disabled');
});

test('a crash shows "restarting", then "ready (restarted)" until the notice expires', () => {
  const crashed = run([{ kind: 'server', state: 'ready' }, { kind: 'crashed', restart: 1, maxRestarts: 5 }]);
  assert.equal(crashed.phase, 'restarting');
  assert.match(present(crashed).text, /restarting server/);
  assert.match(crashed.message, /1 of 5/);
  const back = nextStatus(nextStatus(crashed, { kind: 'server', state: 'loading' }), { kind: 'server', state: 'ready' });
  assert.match(present(back).text, /ready \(restarted\)/);
  assert.match(present(back).tooltip, /Restarted 1 time after a crash/);
  assert.doesNotMatch(present(nextStatus(back, { kind: 'noticeExpired' })).text, /restarted/);
});

test('giving up stops, and late server notifications do not revive the item', () => {
  const stopped = run([{ kind: 'gaveUp', message: 'crashed 6 times' }]);
  assert.equal(stopped.phase, 'stopped');
  assert.equal(present(stopped).background, 'statusBarItem.errorBackground');
  assert.equal(nextStatus(stopped, { kind: 'server', state: 'ready' }).phase, 'stopped');
  assert.equal(nextStatus(stopped, { kind: 'starting' }).phase, 'starting');
});

test('server errors show their message', () => {
  const s = run([{ kind: 'server', state: 'error', message: 'no model at /x' }]);
  assert.equal(s.phase, 'error');
  assert.match(present(s).tooltip, /no model at \/x/);
});

test('codeglm/status params are checked', () => {
  assert.deepEqual(parseServerStatus({ state: 'ready', message: '' }), { state: 'ready' });
  assert.deepEqual(parseServerStatus({ state: 'error', message: 'boom' }), { state: 'error', message: 'boom' });
  assert.equal(parseServerStatus({ state: 'sleeping' }), null);
  assert.equal(parseServerStatus(null), null);
  assert.equal(parseServerStatus('ready'), null);
});
