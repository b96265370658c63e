import * as assert from 'node:assert/strict';
import { test } from 'node:test';
import { renderLastPrompt } from '../../src/lastPromptView';

test('before any completion there is nothing to show', () => {
  assert.match(renderLastPrompt({ prompt: null, snippets: [], text: '' }), /No completion has run yet/);
  assert.match(renderLastPrompt(null), /No completion has run yet/);
});

test('the reason, the snippets with source and path, and the exact prompt', () => {
  const shown = renderLastPrompt({
    path: '/w/app.py', prompt: '# language: Python\n# ```x```\nx = parse_order(', promptTokens: 12, text: '',
    dropped: 'not valid Python on the cursor\'s line',
    snippets: [{ source: 'import', kind: 'definition', name: 'parse_order', path: 'orders.py' }],
  });
  assert.match(shown, /^# CodeGeeX: last prompt for \/w\/app.py/);
  assert.match(shown, /Nothing was shown: not valid Python on the cursor's line\./);
  assert.match(shown, /- import: `parse_order` from orders.py/);
  assert.match(shown, /Prompt \(12 tokens\):\n\n````\n# language: Python\n# ```x```\nx = parse_order\(\n````/);
});

test('what was offered comes first', () => {
  const shown = renderLastPrompt({ prompt: 'p', text: 'raw, True)', snippets: [], dropped: null });
  assert.match(shown, /Offered:\n\n```\nraw, True\)\n```/);
  assert.doesNotMatch(shown, /Nothing was shown/);
});
