import * as assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  parseTranslateResult, progressIncrements, progressLine, readTranslationLanguages, sourceLanguage, TargetLanguage,
  translateArguments, translationChoice, vscodeLanguageId,
} from '../../src/translate';

// What the server puts in its initialize answer (lsp/commands.py, from codeglm/languages.py).
const EXPERIMENTAL = {
  codeglm: {
    translationLanguages: [
      { id: 'python', displayName: 'Python', vscodeIds: ['python'], extensions: ['.py', '.pyi', '.pyw'] },
      { id: 'java', displayName: 'Java', vscodeIds: ['java'], extensions: ['.java'] },
      { id: 'cpp', displayName: 'C++', vscodeIds: ['cpp', 'cuda-cpp'], extensions: ['.cpp', '.hpp'] },
      { id: 'javascript', displayName: 'JavaScript', vscodeIds: ['javascript', 'javascriptreact'], extensions: ['.js'] },
    ],
  },
};
const LANGUAGES: TargetLanguage[] = readTranslationLanguages(EXPERIMENTAL)!;
const python = LANGUAGES.find((l) => l.id === 'python')!;

test('translate file: one argument object that asks the server to create the file, never to overwrite', () => {
  assert.deepEqual(translateArguments({ uri: 'file:///w/Main.java', target: python }), {
    uri: 'file:///w/Main.java', targetLanguage: 'python', createFile: true, overwrite: false,
  });
});

test('translate selection: the range goes along and the result opens unsaved', () => {
  const range = { start: { line: 1, character: 0 }, end: { line: 4, character: 1 } };
  assert.deepEqual(translateArguments({ uri: 'file:///w/a.cpp', target: python, selection: range }), {
    uri: 'file:///w/a.cpp', targetLanguage: 'python', createFile: false, overwrite: false, range,
  });
});

test('the translation languages are read from the server\'s experimental capabilities', () => {
  assert.deepEqual(LANGUAGES.map((l) => l.id), ['python', 'java', 'cpp', 'javascript']);
  assert.deepEqual(LANGUAGES[2], { id: 'cpp', displayName: 'C++', vscodeIds: ['cpp', 'cuda-cpp'], extensions: ['.cpp', '.hpp'] });
  // nothing sent (an older server, another client's section) is not a list: no fallback
  for (const nothing of [undefined, null, {}, { codeglm: {} }, { codeglm: { translationLanguages: [] } },
    { codeglm: { translationLanguages: 'python' } }, { other: EXPERIMENTAL.codeglm }]) {
    assert.equal(readTranslationLanguages(nothing), undefined, JSON.stringify(nothing));
  }
  // broken entries are dropped, missing fields become empty
  assert.deepEqual(readTranslationLanguages({ codeglm: { translationLanguages: [null, { displayName: 'X' }, { id: 'go' }] } }),
    [{ id: 'go', displayName: 'go', vscodeIds: [], extensions: [] }]);
  assert.equal(vscodeLanguageId(LANGUAGES[2]), 'cpp');
  assert.equal(vscodeLanguageId({ id: 'go', displayName: 'Go', vscodeIds: [], extensions: [] }), 'go');
});

test('target choices leave out the source language; VS Code aliases map to codeglm ids', () => {
  const choice = translationChoice(LANGUAGES, 'java');
  assert.ok(choice.ok);
  assert.equal(choice.source.id, 'java');
  assert.deepEqual(choice.targets.map((l) => l.id), ['python', 'cpp', 'javascript']);
  assert.equal(sourceLanguage(LANGUAGES, 'javascriptreact')?.id, 'javascript');
  assert.equal(sourceLanguage(LANGUAGES, 'cuda-cpp')?.id, 'cpp');
  assert.equal(sourceLanguage(LANGUAGES, 'markdown'), undefined);
});

test('a named target skips the picker; a document or target the server does not translate gets a message', () => {
  const named = translationChoice(LANGUAGES, 'cpp', 'python');
  assert.ok(named.ok);
  assert.deepEqual(named.targets, [python]);
  const markdown = translationChoice(LANGUAGES, 'markdown');
  assert.ok(!markdown.ok);
  assert.match(markdown.message, /cannot translate markdown files; it translates Python, Java, C\+\+, JavaScript/);
  for (const target of ['cobol', 'cpp']) {
    const bad = translationChoice(LANGUAGES, 'cpp', target);
    assert.ok(!bad.ok);
    assert.match(bad.message, new RegExp(`cannot translate C\\+\\+ to ${target}; it translates to Python, Java, JavaScript`));
  }
});

test('before the server has named its languages, or when it names none, the command says so', () => {
  for (const languages of [undefined, []]) {
    const choice = translationChoice(languages, 'python', 'java');
    assert.ok(!choice.ok);
    assert.match(choice.message, /server did not say which languages it translates.*Restart Server/);
  }
});

test('the server result is read, with failed units as short lines', () => {
  const r = parseTranslateResult({
    text: 'def add(a, b):\n    return a + b\n', uri: 'file:///w/Main.py',
    failedUnits: [{ index: 1, problem: 'does not parse as Python near line 3', text: '# ...' }, 'helper'],
  });
  assert.equal(r.uri, 'file:///w/Main.py');
  assert.deepEqual(r.failedUnits, ['unit 2 (does not parse as Python near line 3)', 'helper']);
  assert.equal(r.message, null);
  const notWritten = parseTranslateResult({ text: 'x = 1\n', uri: null, failedUnits: [], message: 'not written: exists' });
  assert.equal(notWritten.uri, null);
  assert.equal(notWritten.message, 'not written: exists');
  assert.throws(() => parseTranslateResult(null), /instead of a translation/);
  assert.throws(() => parseTranslateResult({ uri: null }), /no "text"/);
});

test('progress values become a line for the progress notification', () => {
  assert.deepEqual(progressLine({ kind: 'report', message: 'translated unit 1 of 3', percentage: 33 }),
    { message: 'translated unit 1 of 3', percentage: 33 });
  assert.deepEqual(progressLine({ kind: 'begin', title: 'Translating Java to Python' }), { message: 'Translating Java to Python' });
  assert.deepEqual(progressLine(undefined), {});
});

test('absolute LSP percentages become forward-only VS Code increments', () => {
  const next = progressIncrements();
  assert.deepEqual(next({ kind: 'begin', title: 'Translating', percentage: 0 }), { message: 'Translating' });
  assert.deepEqual(next({ kind: 'report', message: 'unit 1 of 4', percentage: 25 }), { message: 'unit 1 of 4', increment: 25 });
  // a retry of the same unit reports the same percentage: the bar stays
  assert.deepEqual(next({ kind: 'report', message: 'unit 1 of 4: retry 1 of 2', percentage: 25 }), { message: 'unit 1 of 4: retry 1 of 2' });
  assert.deepEqual(next({ kind: 'report', message: 'unit 3 of 4', percentage: 75 }), { message: 'unit 3 of 4', increment: 50 });
  // never backwards, never past 100
  assert.deepEqual(next({ kind: 'report', message: 'late', percentage: 50 }), { message: 'late' });
  assert.deepEqual(next({ kind: 'report', percentage: 400 }), { increment: 25 });
  assert.deepEqual(next({ kind: 'report', percentage: 100 }), {});
});
