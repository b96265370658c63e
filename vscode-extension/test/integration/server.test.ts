// The extension's client code against the real Python server (`python -m lsp`) over stdio:
// a completion and a translation, with the real model pipeline behind them.
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { inlineCompletionParams, INLINE_COMPLETION_METHOD, parseInlineCompletion } from '../../src/inline';
import { pythonCandidates, resolvePython } from '../../src/python';
import { readSettings } from '../../src/settings';
import {
  parseTranslateResult, readTranslationLanguages, TargetLanguage, TRANSLATE_FILE, TRANSLATE_SELECTION, translateArguments,
  translationChoice,
} from '../../src/translate';
import { TestLspClient } from '../support/lspClient';
import { testBackend, VENV_PYTHON } from '../support/model';

// The cursor stands in a comment: the tiny random test model writes words, which the
// server drops as junk where code is expected (codeglm/syntax/guard.py).
const PY_SOURCE = 'import os\n\n\ndef add(a, b):\n    """Return the sum of a and b."""\n    # return ';
const JAVA_SOURCE = [
  'public class Greeter {',
  '    public static int add(int a, int b) {',
  '        return a + b;',
  '    }',
  '}',
  '',
].join('\n');

let client: TestLspClient;
let workspace: string;
let toPython: TargetLanguage;

before(async () => {
  workspace = fs.mkdtempSync(path.join(os.tmpdir(), 'codeglm-ext-it-'));
  // the extension's own interpreter search, pointed at the project's virtualenv
  const python = resolvePython(pythonCandidates(VENV_PYTHON, [], process.env), undefined, true);
  assert.ok(python.ok, python.ok ? '' : python.message);
  const settings = readSettings((key) => ({
    backend: testBackend(), maxTokens: 16, temperature: 0, debounceMs: 0, 'server.logLevel': 'info',
  } as Record<string, unknown>)[key]);
  client = new TestLspClient(python.python, settings);
  const init = await client.initialize(pathToFileURL(workspace).toString()) as { capabilities: Record<string, unknown> };
  assert.ok(init.capabilities.inlineCompletionProvider, 'the server advertises inline completion');
  const commands = (init.capabilities.executeCommandProvider as { commands: string[] }).commands;
  assert.ok(commands.includes(TRANSLATE_FILE), `the server offers ${TRANSLATE_FILE}: ${commands}`);
  // the translation languages come with the answer, as translateCommand.ts reads them
  const choice = translationChoice(readTranslationLanguages(init.capabilities.experimental), 'java');
  assert.ok(choice.ok, choice.ok ? '' : `${choice.message}: ${JSON.stringify(init.capabilities.experimental)}`);
  assert.deepEqual(choice.targets.map((l) => l.id).sort(), ['cpp', 'go', 'javascript', 'python', 'rust']);
  toPython = choice.targets.find((l) => l.id === 'python')!;
  await client.waitForPhase('ready', 240_000);
});

after(async () => {
  try {
    if (client) {
      const code = await client.close();
      assert.equal(code, 0, `the server exits cleanly after shutdown/exit:\n${client.stderr.slice(-3000)}`);
    }
  } finally {
    fs.rmSync(workspace, { recursive: true, force: true });
  }
});

test('an inline completion comes back from the real server', async () => {
  const uri = pathToFileURL(path.join(workspace, 'calc.py')).toString();
  await client.open(uri, 'python', PY_SOURCE);
  const lines = PY_SOURCE.split('\n');
  const params = inlineCompletionParams(uri, lines.length - 1, lines[lines.length - 1].length, true);
  const items = parseInlineCompletion(await client.connection.sendRequest(INLINE_COMPLETION_METHOD, params));
  assert.ok(items.length >= 1, `at least one item (server log:\n${client.stderr.slice(-2000)})`);
  assert.ok(items[0].insertText.trim().length > 0, `non-blank ghost text: ${JSON.stringify(items[0])}`);
  // the server says what it is doing while it generates
  assert.ok(client.received.statuses.includes('generating'), `statuses: ${client.received.statuses}`);
});

test('translating a Java file creates a Python file beside it', async () => {
  const file = path.join(workspace, 'Greeter.java');
  fs.writeFileSync(file, JAVA_SOURCE);
  const uri = pathToFileURL(file).toString();
  await client.open(uri, 'java', JAVA_SOURCE);
  const args = translateArguments({ uri, target: toPython });
  assert.equal(args.createFile, true);
  const result = parseTranslateResult(await client.connection.sendRequest('workspace/executeCommand', {
    command: TRANSLATE_FILE, arguments: [args],
  }));
  assert.ok(result.text.length > 0, 'a translation text');
  assert.ok(result.uri, `the server created a file: ${JSON.stringify(result)}`);
  const created = new URL(result.uri!);
  assert.equal(path.dirname(created.pathname), workspace, 'beside the source');
  assert.equal(path.extname(created.pathname), '.py');
  assert.equal(fs.readFileSync(created, 'utf8'), result.text, 'the file holds the translation (via workspace/applyEdit)');
  const kinds = client.received.progress.map((v) => (v as { kind: string }).kind);
  assert.deepEqual([kinds[0], kinds[kinds.length - 1]], ['begin', 'end'], `progress reported: ${kinds}`);
});

test('translating a selection returns text and creates no file', async () => {
  const file = path.join(workspace, 'Util.java');
  const source = 'class Util {\n    static int twice(int x) { return 2 * x; }\n}\n';
  fs.writeFileSync(file, source);
  const uri = pathToFileURL(file).toString();
  await client.open(uri, 'java', source);
  const selection = { start: { line: 1, character: 4 }, end: { line: 1, character: 45 } };
  const args = translateArguments({ uri, target: toPython, selection });
  const before = fs.readdirSync(workspace).sort();
  const result = parseTranslateResult(await client.connection.sendRequest('workspace/executeCommand', {
    command: TRANSLATE_SELECTION, arguments: [args],
  }));
  assert.ok(result.text.length > 0, 'a translation text');
  assert.equal(result.uri, null, 'a selection opens as an unsaved document: no file');
  assert.deepEqual(fs.readdirSync(workspace).sort(), before, 'nothing written to disk');
});
