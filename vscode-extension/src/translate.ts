// The translate commands' pure parts: the target languages the server advertises, the
// command arguments the server expects, and reading its answer. No `vscode` import.

import { EXPERIMENTAL_SECTION } from './protocol';

/** Server command ids (workspace/executeCommand). */
export const TRANSLATE_FILE = 'codeglm.translateFile';
export const TRANSLATE_SELECTION = 'codeglm.translateSelection';

/**
 * A language translation can take: codeglm's id, its name, and the VS Code language ids
 * and file extensions that map to it. The server sends these (from codeglm/languages.py).
 */
export interface TargetLanguage {
  id: string;
  displayName: string;
  vscodeIds: string[];
  extensions: string[];
}

function strings(value: unknown): string[] {
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string' && v !== '') : [];
}

/**
 * The translation languages in the server's `initialize` answer
 * (`capabilities.experimental.codeglm.translationLanguages`), or undefined when it names
 * none: the extension keeps no list of its own to fall back on.
 */
export function readTranslationLanguages(experimental: unknown): TargetLanguage[] | undefined {
  const section = (experimental as Record<string, unknown> | null | undefined)?.[EXPERIMENTAL_SECTION];
  const raw = (section as Record<string, unknown> | null | undefined)?.translationLanguages;
  if (!Array.isArray(raw)) return undefined;
  const languages = raw.flatMap((entry): TargetLanguage[] => {
    const o = (entry ?? {}) as Record<string, unknown>;
    if (typeof o.id !== 'string' || o.id === '') return [];
    const displayName = typeof o.displayName === 'string' && o.displayName !== '' ? o.displayName : o.id;
    return [{ id: o.id, displayName, vscodeIds: strings(o.vscodeIds), extensions: strings(o.extensions) }];
  });
  return languages.length ? languages : undefined;
}

/**
 * The language of a document by its VS Code language id. (Not by file extension: the
 * client syncs only documents of protocol.ts's DOCUMENT_LANGUAGES, so the server would not see others' edits.)
 */
export function sourceLanguage(languages: readonly TargetLanguage[], vscodeLanguageId: string): TargetLanguage | undefined {
  return languages.find((l) => l.vscodeIds.includes(vscodeLanguageId));
}

/** The VS Code language id to open a translation into `language` with. */
export function vscodeLanguageId(language: TargetLanguage): string {
  return language.vscodeIds[0] ?? language.id;
}

/** What the translate command can offer for a document, or the message saying why not. */
export type TranslationChoice =
  | { ok: true; source: TargetLanguage; targets: TargetLanguage[] }
  | { ok: false; message: string };

/**
 * The source language and the targets to offer: every language but the source's, or
 * only `target` (a codeglm id) when one is given. `languages` undefined: the server has
 * not named any.
 */
export function translationChoice(
  languages: readonly TargetLanguage[] | undefined, vscodeLanguageId: string, target?: string,
): TranslationChoice {
  if (!languages?.length) {
    return {
      ok: false,
      message: 'CodeGeeX: the codeglm server did not say which languages it translates (is codeglm older than '
        + 'the extension?); update codeglm, then run "CodeGeeX: Restart Server".',
    };
  }
  const names = languages.map((l) => l.displayName).join(', ');
  const source = sourceLanguage(languages, vscodeLanguageId);
  if (!source) return { ok: false, message: `CodeGeeX cannot translate ${vscodeLanguageId} files; it translates ${names}.` };
  const others = languages.filter((l) => l.id !== source.id);
  if (target === undefined) return { ok: true, source, targets: others };
  const named = others.find((l) => l.id === target);
  if (!named) {
    return { ok: false, message: `CodeGeeX cannot translate ${source.displayName} to ${target}; it translates to ${others.map((l) => l.displayName).join(', ')}.` };
  }
  return { ok: true, source, targets: [named] };
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
