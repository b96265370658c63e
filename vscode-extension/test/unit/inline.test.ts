import * as assert from 'node:assert/strict';
import { test } from 'node:test';
import { debounce, inlineCompletionParams, parseInlineCompletion } from '../../src/inline';

class FakeToken {
  isCancellationRequested = false;
  private listeners: Array<() => unknown> = [];
  onCancellationRequested(l: () => unknown) {
    this.listeners.push(l);
    return { dispose: () => { this.listeners = this.listeners.filter((x) => x !== l); } };
  }
  cancel() { this.isCancellationRequested = true; for (const l of this.listeners) l(); }
  get listening() { return this.listeners.length; }
}

test('request params use LSP 3.18 trigger kinds (1 invoked, 2 automatic)', () => {
  const auto = inlineCompletionParams('file:///a.py', 3, 7, false);
  assert.deepEqual(auto, { textDocument: { uri: 'file:///a.py' }, position: { line: 3, character: 7 }, context: { triggerKind: 2 } });
  assert.equal(inlineCompletionParams('file:///a.py', 0, 0, true).context.triggerKind, 1);
  const withSelected = inlineCompletionParams('file:///a.py', 2, 5, false, { text: 'print', line: 2, startCharacter: 0, endCharacter: 2 });
  assert.deepEqual(withSelected.context.selectedCompletionInfo, {
    text: 'print', range: { start: { line: 2, character: 0 }, end: { line: 2, character: 2 } },
  });
});

test('answers: a list, an item array, StringValue snippets; blanks dropped', () => {
  const range = { start: { line: 1, character: 4 }, end: { line: 1, character: 4 } };
  assert.deepEqual(parseInlineCompletion({ items: [{ insertText: 'return a + b', range }, { insertText: '' }] }),
    [{ insertText: 'return a + b', range }]);
  assert.deepEqual(parseInlineCompletion([{ insertText: { kind: 'snippet', value: 'x = 1' } }]), [{ insertText: 'x = 1' }]);
  assert.deepEqual(parseInlineCompletion(null), []);
  assert.deepEqual(parseInlineCompletion({ items: 'nope' }), []);
});

test('debounce resolves true after the pause and false when typing cancels it', async () => {
  const calm = new FakeToken();
  const t0 = Date.now();
  assert.equal(await debounce(40, calm), true);
  assert.ok(Date.now() - t0 >= 35);
  assert.equal(calm.listening, 0, 'no listener left behind');

  const typing = new FakeToken();
  const pending = debounce(10_000, typing);
  setTimeout(() => typing.cancel(), 10);
  const t1 = Date.now();
  assert.equal(await pending, false);
  assert.ok(Date.now() - t1 < 1000, 'returns as soon as cancelled');
  assert.equal(await debounce(0, new FakeToken()), true);
});
