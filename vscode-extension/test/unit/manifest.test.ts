// package.json is the extension's contract with VS Code: every command the code
// registers is contributed with the title the issue names, every setting has a description.
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { COMMANDS, DOCUMENT_LANGUAGES } from '../../src/protocol';

const manifest = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', '..', 'package.json'), 'utf8'));

test('the six commands are contributed under the CodeGeeX category', () => {
  const titles = Object.fromEntries(manifest.contributes.commands.map((c: { command: string; category: string; title: string }) =>
    [c.command, `${c.category}: ${c.title}`]));
  assert.deepEqual(titles, {
    [COMMANDS.translateFile]: 'CodeGeeX: Translate File...',
    [COMMANDS.translateSelection]: 'CodeGeeX: Translate Selection...',
    [COMMANDS.toggleCompletion]: 'CodeGeeX: Toggle Completion',
    [COMMANDS.restartServer]: 'CodeGeeX: Restart Server',
    [COMMANDS.showLog]: 'CodeGeeX: Show Log',
    [COMMANDS.showLastPrompt]: 'CodeGeeX: Show Last Prompt',
  });
});

test('every setting has a description, and the ones the issue names exist', () => {
  const props = manifest.contributes.configuration.properties as Record<string, { description?: string; markdownDescription?: string }>;
  for (const key of ['codeglm.backend', 'codeglm.pythonPath', 'codeglm.maxTokens', 'codeglm.temperature',
    'codeglm.debounceMs', 'codeglm.enabledLanguages', 'codeglm.candidates']) assert.ok(props[key], key);
  for (const [key, p] of Object.entries(props)) assert.ok((p.description ?? p.markdownDescription ?? '').length > 20, key);
});

test('the server\'s own command ids are not reused for the extension\'s commands', () => {
  for (const id of Object.values(COMMANDS)) {
    assert.ok(!['codeglm.translateFile', 'codeglm.translateSelection', 'codeglm.showLastPrompt'].includes(id));
  }
});

test('the client syncs documents of exactly the languages the extension activates on', () => {
  const onLanguage = (manifest.activationEvents as string[]).filter((e) => e.startsWith('onLanguage:')).map((e) => e.slice(11));
  assert.deepEqual([...DOCUMENT_LANGUAGES].sort(), onLanguage.sort());
});
