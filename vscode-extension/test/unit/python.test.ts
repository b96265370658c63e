import * as assert from 'node:assert/strict';
import { test } from 'node:test';
import { probePython, pythonCandidates, resolvePython } from '../../src/python';

test('the setting alone is tried when set', () => {
  assert.deepEqual(pythonCandidates('/opt/py/bin/python', ['/ws'], { VIRTUAL_ENV: '/venv' }), ['/opt/py/bin/python']);
});

test('otherwise workspace .venv, the active virtualenv, python3, python', () => {
  assert.deepEqual(pythonCandidates('', ['/ws'], { VIRTUAL_ENV: '/venv' }),
    ['/ws/.venv/bin/python', '/venv/bin/python', 'python3', 'python']);
  assert.deepEqual(pythonCandidates('', [], {}), ['python3', 'python']);
});

test('the first interpreter that can import lsp wins', () => {
  const probe = (p: string) => (p === 'python' ? null : "No module named 'lsp'");
  assert.deepEqual(resolvePython(['python3', 'python'], probe), { ok: true, python: 'python', tried: ['python3', 'python'] });
});

test('none found: a message saying what to install and what to set', () => {
  const r = resolvePython(['python3'], () => 'not found');
  assert.equal(r.ok, false);
  assert.match(r.ok ? '' : r.message, /No Python with codeglm installed.*python3: not found.*codeglm\.pythonPath/);
  const bad = resolvePython(['/x/python'], () => "No module named 'lsp'", true);
  assert.match(bad.ok ? '' : bad.message, /The Python set in "codeglm.pythonPath" cannot run/);
});

test('the real probe: a missing interpreter and one without codeglm', () => {
  assert.equal(probePython('/nonexistent/python3'), 'not found');
  // node itself is not a Python: the probe reports its failure instead of throwing
  assert.notEqual(probePython(process.execPath), null);
});
