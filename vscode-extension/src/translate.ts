// The translate commands' pure parts: target languages, the command arguments the
// server expects, and reading its answer. No `vscode` import.

/** Server command ids (workspace/executeCommand). */
export const TRANSLATE_FILE = 'codeglm.translateFile';
export const TRANSLATE_SELECTION = 'codeglm.translateSelection';

/** A language translation can target: codeglm's id, its name, and VS Code's language id. */
export interface TargetLanguage {
  id: string;
  displayName: string;
  vscodeId: string;
}

// The languages of codeglm's language table (codeglm/languages.py) that CodeGeeX was
// trained to translate between.
export const TARGET_LANGUAGES: readonly TargetLanguage[] = [
  { id: 'python', displayName: 'Python', vscodeId: 'python' },
  { id: 'java', displayName: 'Java', vscodeId: 'java' },
  { id: 'cpp', displayName: 'C++', vscodeId: 'cpp' },
  { id: 'c', displayName: 'C', vscodeId: 'c' },
  { id: 'javascript', displayName: 'JavaScript', vscodeId: 'javascript' },
  { id: 'typescript', displayName: 'TypeScript', vscodeId: 'typescript' },
  { id: 'go', displayName: 'Go', vscodeId: 'go' },
  { id: 'rust', displayName: 'Rust', vscodeId: 'rust' },
];

const VSCODE_ALIASES: Record<string, string> = {
  'cuda-cpp': 'cpp', javascriptreact: 'javascript', typescriptreact: 'typescript',
};

/** codeglm's language for a VS Code language id, or undefined when it has none. */
export function sourceLanguage(vscodeLanguageId: string): TargetLanguage | undefined {
  const id = VSCODE_ALIASES[vscodeLanguageId] ?? vscodeLanguageId;
  return TARGET_LANGUAGES.find((l) => l.id === id);
}

/** Languages offered as targets: every one but the source's. */
export function targetChoices(sourceVscodeId: string): TargetLanguage[] {
  const source = sourceLanguage(sourceVscodeId);
  return TARGET_LANGUAGES.filter((l) => l.id !== source?.id);
}

export interface LspRange {
  start: { line: number; character: number };
  end: { line: number; character: number };
}

export interface TranslateArguments {
  uri: string;
  targetLanguage: string;
  range?: LspRange;
  createFile: boolean;
  overwrite: boolean;
}

/**
 * The one argument of `codeglm.translateFile` / `codeglm.translateSelection`.
 * A whole file becomes a new file next to the source (never overwriting one unless
 * asked); a selection's translation opens as an unsaved document instead.
 */
export function translateArguments(opts: {
  uri: string; target: TargetLanguage; selection?: LspRange; overwrite?: boolean;
}): TranslateArguments {
  const args: TranslateArguments = {
    uri: opts.uri,
    targetLanguage: opts.target.id,
    createFile: opts.selection === undefined,
    overwrite: opts.overwrite ?? false,
  };
  if (opts.selection !== undefined) args.range = opts.selection;
  return args;
}

export interface TranslateResult {
  text: string;
  /** The file the server created, or null when it created none. */
  uri: string | null;
  /** Units the server could not translate into valid code, one line each. */
  failedUnits: string[];
  /** Why the server did not create the file, e.g. it exists already. */
  message: string | null;
}

/** One failed unit as a short line: the server sends objects like {index, problem, text}. */
function unitName(u: unknown): string {
  if (typeof u === 'string') return u;
  if (typeof u === 'object' && u !== null) {
    const o = u as Record<string, unknown>;
    const label = typeof o.name === 'string' ? o.name : typeof o.index === 'number' ? `unit ${o.index + 1}` : 'a unit';
    const why = ['problem', 'message', 'unit'].map((k) => o[k]).find((v): v is string => typeof v === 'string');
    return why ? `${label} (${why})` : label;
  }
  return String(u);
}

/** Checks the server's answer; throws an Error naming what is wrong with it. */
export function parseTranslateResult(raw: unknown): TranslateResult {
  if (typeof raw !== 'object' || raw === null) throw new Error(`the server answered ${JSON.stringify(raw)} instead of a translation`);
  const o = raw as Record<string, unknown>;
  if (typeof o.text !== 'string') throw new Error('the server\'s translation has no "text"');
  const uri = typeof o.uri === 'string' && o.uri !== '' ? o.uri : null;
  const failed = Array.isArray(o.failedUnits) ? o.failedUnits.map(unitName) : [];
  const message = typeof o.message === 'string' && o.message !== '' ? o.message : null;
  return { text: o.text, uri, failedUnits: failed, message };
}

/** What `$/progress` reports during a translation, as one line for the progress UI. */
export function progressLine(value: unknown): { message?: string; percentage?: number } {
  if (typeof value !== 'object' || value === null) return {};
  const v = value as { kind?: unknown; title?: unknown; message?: unknown; percentage?: unknown };
  const out: { message?: string; percentage?: number } = {};
  const msg = typeof v.message === 'string' ? v.message : typeof v.title === 'string' ? v.title : undefined;
  if (msg !== undefined) out.message = msg;
  if (typeof v.percentage === 'number') out.percentage = v.percentage;
  return out;
}

/**
 * Maps `$/progress` values to what VS Code's `progress.report` takes: LSP sends an
 * absolute percentage, VS Code adds up `increment`s. Keeps the last percentage so the
 * bar moves forward only (clamped to 0..100).
 */
export function progressIncrements(): (value: unknown) => { message?: string; increment?: number } {
  let reported = 0;
  return (value) => {
    const { message, percentage } = progressLine(value);
    const out: { message?: string; increment?: number } = {};
    if (message !== undefined) out.message = message;
    if (percentage !== undefined) {
      const now = Math.min(100, Math.max(reported, percentage));
      if (now > reported) out.increment = now - reported;
      reported = now;
    }
    return out;
  };
}
