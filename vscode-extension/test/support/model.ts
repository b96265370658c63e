// The model the integration and e2e tests run the real server with: a tiny random
// CodeGeeX model (cached), whose greedy output is nonsense but never empty at the
// positions the tests use, so the tests do not depend on how well the default model
// is trained. CODEGLM_TEST_BACKEND='' runs them with the default model instead.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export const REPO = path.resolve(__dirname, '..', '..', '..', '..');
export const EXTENSION_DIR = path.join(REPO, 'vscode-extension');
/** The project's virtualenv python (tests run against the checkout they live in). */
export const VENV_PYTHON = process.env.CODEGLM_PYTHON || path.join(REPO, '.venv', 'bin', 'python');

/**
 * The `codeglm.backend` setting for tests: `native:DIR` with a tiny random model made
 * once into a cache dir, unless CODEGLM_TEST_BACKEND says otherwise ('' = default model).
 */
export function testBackend(): string {
  if (process.env.CODEGLM_TEST_BACKEND !== undefined) return process.env.CODEGLM_TEST_BACKEND;
  const cache = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  const dir = path.join(cache, 'codeglm', 'tiny-codegeex-h64-l2');
  if (!fs.existsSync(path.join(dir, 'model.safetensors'))) {
    const tmp = `${dir}.tmp-${process.pid}`;
    const r = spawnSync(VENV_PYTHON, [path.join(EXTENSION_DIR, 'test', 'fixtures', 'make_tiny_model.py'), tmp], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`making the tiny test model failed:\n${r.stdout}${r.stderr}`);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(tmp, dir);
  }
  return `native:${dir}`;
}
