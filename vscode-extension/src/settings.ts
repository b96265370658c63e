// The extension's settings, read from any key/value source (VS Code's configuration in
// the extension, plain objects in tests), and what the language server is told.
// Pure: no `vscode` import, so that unit tests run in plain node.

/** Everything a user can set under `codeglm.*` (see package.json for the descriptions). */
export interface ExtensionSettings {
  /** Whether ghost-text completion is on (the status bar item toggles it). */
  enabled: boolean;
  /** Backend spec for the server (`native:DIR`, `hf:DIR`, `openai:URL#MODEL`); '' = the default model. */
  backend: string;
  /** Python interpreter that has codeglm installed; '' = find one on PATH. */
  pythonPath: string;
  maxTokens: number;
  temperature: number;
  /** Pause after typing before a completion is asked for, in milliseconds. */
  debounceMs: number;
  /** Distinct completions asked for when the user triggers one explicitly (cycled with Alt+] / Alt+[). */
  candidates: number;
  /** VS Code language ids completion runs for; ['*'] = every language the server supports. */
  enabledLanguages: string[];
  /** Restarts after crashes allowed within `restartWindowMs` before the extension gives up. */
  maxRestarts: number;
  /** Server log level (`--log-level`). */
  logLevel: 'debug' | 'info' | 'warning' | 'error';
}

export const DEFAULT_SETTINGS: Readonly<ExtensionSettings> = Object.freeze({
  enabled: true,
  backend: '',
  pythonPath: '',
  maxTokens: 64,
  temperature: 0,
  debounceMs: 150,
  candidates: 3,
  enabledLanguages: ['*'],
  maxRestarts: 5,
  logLevel: 'info',
});

/** The restart budget's window: `maxRestarts` crashes within it and the extension stops trying. */
export const RESTART_WINDOW_MS = 3 * 60 * 1000;

/** A settings source: VS Code's `WorkspaceConfiguration.get` has this shape. */
export type SettingsGetter = (key: string) => unknown;

const LOG_LEVELS = ['debug', 'info', 'warning', 'error'] as const;

function number(value: unknown, fallback: number, low: number, high: number): number {
  if (typeof value !== 'number' || !Number.isFinite(value)) return fallback;
  return Math.min(high, Math.max(low, value));
}

function integer(value: unknown, fallback: number, low: number, high: number): number {
  return Math.round(number(value, fallback, low, high));
}

function text(value: unknown, fallback: string): string {
  return typeof value === 'string' ? value.trim() : fallback;
}

function languageList(value: unknown): string[] {
  if (!Array.isArray(value)) return [...DEFAULT_SETTINGS.enabledLanguages];
  const ids = value.filter((v): v is string => typeof v === 'string' && v.trim() !== '')
    .map((v) => v.trim().toLowerCase());
  return ids.length ? ids : [...DEFAULT_SETTINGS.enabledLanguages];
}

/**
 * The settings from `get`, each value checked and clamped into the range the server
 * accepts, so that a typo in settings.json falls back to a working value instead of
 * a server that rejects the whole configuration.
 */
export function readSettings(get: SettingsGetter): ExtensionSettings {
  const d = DEFAULT_SETTINGS;
  const level = get('server.logLevel');
  return {
    enabled: typeof get('enabled') === 'boolean' ? (get('enabled') as boolean) : d.enabled,
    backend: text(get('backend'), d.backend),
    pythonPath: text(get('pythonPath'), d.pythonPath),
    maxTokens: integer(get('maxTokens'), d.maxTokens, 1, 2048),
    temperature: number(get('temperature'), d.temperature, 0, 2),
    debounceMs: integer(get('debounceMs'), d.debounceMs, 0, 10_000),
    candidates: integer(get('candidates'), d.candidates, 1, 8),
    enabledLanguages: languageList(get('enabledLanguages')),
    maxRestarts: integer(get('server.maxRestarts'), d.maxRestarts, 0, 100),
    logLevel: LOG_LEVELS.includes(level as never) ? (level as ExtensionSettings['logLevel']) : d.logLevel,
  };
}

/** The `codeglm` section the server reads (initializationOptions, didChangeConfiguration). */
export interface ServerSettings {
  backend: string | null;
  enabled: boolean;
  maxTokens: number;
  temperature: number;
  /** The client already waits `debounceMs` before asking; the server must not wait again. */
  debounceMs: number;
  /** Items for an explicit (Invoked) inline completion request; one while typing. */
  candidates: number;
  enabledLanguages: string[] | null;
}

export function serverSettings(s: ExtensionSettings): ServerSettings {
  return {
    backend: s.backend === '' ? null : s.backend,
    enabled: s.enabled,
    maxTokens: s.maxTokens,
    temperature: s.temperature,
    debounceMs: 0,
    candidates: s.candidates,
    enabledLanguages: s.enabledLanguages.includes('*') ? null : s.enabledLanguages,
  };
}

/** Whether ghost text is wanted for a document in `languageId`. */
export function completionWanted(s: ExtensionSettings, languageId: string): boolean {
  if (!s.enabled) return false;
  return s.enabledLanguages.includes('*') || s.enabledLanguages.includes(languageId.toLowerCase());
}

/** How to start the server: the interpreter comes from `resolvePython`. */
export interface ServerLaunch {
  command: string;
  args: string[];
  env: Record<string, string>;
}

export function serverLaunch(python: string, s: ExtensionSettings): ServerLaunch {
  const args = ['-m', 'lsp', '--log-level', s.logLevel];
  if (s.backend !== '') args.push('--backend', s.backend);
  // unbuffered: the server's stderr log reaches the output channel as it happens
  return { command: python, args, env: { PYTHONUNBUFFERED: '1' } };
}

/** Settings whose change needs a new server process (the rest are sent to the live one). */
export function needsRestart(before: ExtensionSettings, after: ExtensionSettings): boolean {
  return before.pythonPath !== after.pythonPath || before.logLevel !== after.logLevel;
}
