import * as assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  completionWanted, DEFAULT_SETTINGS, needsRestart, readSettings, serverLaunch, serverSettings,
} from '../../src/settings';

const from = (values: Record<string, unknown>) => readSettings((key) => values[key]);

test('no settings give the defaults', () => {
  assert.deepEqual(from({}), DEFAULT_SETTINGS);
});

test('settings become the server section the Python server reads', () => {
  const s = from({
    backend: ' native:/models/codegeex ', maxTokens: 128, temperature: 0.2, debounceMs: 300,
    enabledLanguages: ['Python', 'java'], enabled: false, candidates: 5,
  });
  assert.deepEqual(serverSettings(s), {
    backend: 'native:/models/codegeex', enabled: false, maxTokens: 128, temperature: 0.2,
    debounceMs: 0, candidates: 5, enabledLanguages: ['python', 'java'],
  });
});

test('an empty backend and ["*"] mean the server defaults (null)', () => {
  const out = serverSettings(from({ backend: '', enabledLanguages: ['*'] }));
  assert.equal(out.backend, null);
  assert.equal(out.enabledLanguages, null);
});

test('out-of-range and mistyped values fall back or are clamped', () => {
  const s = from({ maxTokens: 100000, temperature: -1, debounceMs: 'soon', enabledLanguages: 'python', 'server.logLevel': 'loud' });
  assert.equal(s.maxTokens, 2048);
  assert.equal(s.temperature, 0);
  assert.equal(s.debounceMs, DEFAULT_SETTINGS.debounceMs);
  assert.deepEqual(s.enabledLanguages, ['*']);
  assert.equal(s.logLevel, 'info');
  assert.equal(from({ maxTokens: 12.6 }).maxTokens, 13);
  // the server accepts 1..8 candidates
  assert.equal(from({ candidates: 0 }).candidates, 1);
  assert.equal(from({ candidates: 20 }).candidates, 8);
  assert.equal(from({ candidates: 'many' }).candidates, 3);
});

test('server launch: python -m lsp with log level, and the backend only when set', () => {
  assert.deepEqual(serverLaunch('/venv/bin/python', from({})).args, ['-m', 'lsp', '--log-level', 'info']);
  const launch = serverLaunch('/venv/bin/python', from({ backend: 'hf:/m', 'server.logLevel': 'debug' }));
  assert.equal(launch.command, '/venv/bin/python');
  assert.deepEqual(launch.args, ['-m', 'lsp', '--log-level', 'debug', '--backend', 'hf:/m']);
  assert.equal(launch.env.PYTHONUNBUFFERED, '1');
});

test('completion is wanted per language and only while enabled', () => {
  assert.equal(completionWanted(from({}), 'python'), true);
  assert.equal(completionWanted(from({ enabledLanguages: ['java'] }), 'python'), false);
  assert.equal(completionWanted(from({ enabledLanguages: ['java'] }), 'Java'), true);
  assert.equal(completionWanted(from({ enabled: false }), 'python'), false);
});

test('only interpreter and log level changes need a new server process', () => {
  const base = from({});
  assert.equal(needsRestart(base, from({ backend: 'native:/x', maxTokens: 9 })), false);
  assert.equal(needsRestart(base, from({ pythonPath: '/other/python' })), true);
  assert.equal(needsRestart(base, from({ 'server.logLevel': 'debug' })), true);
});
