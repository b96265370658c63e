import * as assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  parseTranslateResult, progressIncrements, progressLine, sourceLanguage, TARGET_LANGUAGES, targetChoices, translateArguments,
} from '../../src/translate';

const python = TARGET_LANGUAGES.find((l) => l.id === 'python')!;

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

test('target choices leave out the source language; VS Code aliases map to codeglm ids', () => {
  const ids = targetChoices('java').map((l) => l.id);
  assert.ok(!ids.includes('java'));
  assert.ok(ids.includes('python') && ids.includes('cpp'));
  assert.equal(sourceLanguage('typescriptreact')?.id, 'typescript');
  assert.equal(sourceLanguage('cuda-cpp')?.id, 'cpp');
  assert.equal(sourceLanguage('markdown'), undefined);
  assert.equal(targetChoices('markdown').length, TARGET_LANGUAGES.length);
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
