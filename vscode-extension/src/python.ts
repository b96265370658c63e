// Finding the Python interpreter that has codeglm (and so its `lsp` package) installed.
// Node-only (child_process), no `vscode` import.
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

/** Runs `python -c "import lsp"`; returns null when it works, else why it did not. */
export type PythonProbe = (python: string) => string | null;

export type PythonChoice =
  | { ok: true; python: string; tried: string[] }
  | { ok: false; message: string; tried: string[] };

/** `python -c "import lsp"` with a timeout: importing codeglm's server must just work. */
export const probePython: PythonProbe = (python) => {
  const r = spawnSync(python, ['-c', 'import lsp'], { encoding: 'utf8', timeout: 30_000 });
  if (r.error) return (r.error as NodeJS.ErrnoException).code === 'ENOENT' ? 'not found' : r.error.message;
  if (r.status !== 0) {
    const last = (r.stderr || '').trim().split('\n').pop() || `exit status ${r.status}`;
    return last;
  }
  return null;
};

/**
 * Interpreters to try, best first: the setting alone when it is set (a wrong setting
 * must be reported, not silently replaced); otherwise a virtualenv in a workspace
 * folder, the active virtualenv, then python3 and python on PATH.
 */
export function pythonCandidates(configured: string, workspaceFolders: string[], env: NodeJS.ProcessEnv): string[] {
  if (configured !== '') return [configured];
  const found: string[] = [];
  for (const folder of workspaceFolders) found.push(path.join(folder, '.venv', 'bin', 'python'));
  if (env.VIRTUAL_ENV) found.push(path.join(env.VIRTUAL_ENV, 'bin', 'python'));
  found.push('python3', 'python');
  return [...new Set(found)];
}

export function resolvePython(candidates: string[], probe: PythonProbe = probePython, configured = false): PythonChoice {
  const problems: string[] = [];
  for (const python of candidates) {
    const problem = probe(python);
    if (problem === null) return { ok: true, python, tried: candidates };
    problems.push(`${python}: ${problem}`);
  }
  const what = configured
    ? `The Python set in "codeglm.pythonPath" cannot run the codeglm server (${problems.join('; ')}).`
    : `No Python with codeglm installed was found (tried ${problems.join('; ')}).`;
  return {
    ok: false,
    tried: candidates,
    message: `${what} Install codeglm into a Python environment (pip install -e <codeglm checkout>) `
      + 'and set "codeglm.pythonPath" to that environment\'s python, e.g. /path/to/codeglm/.venv/bin/python.',
  };
}
