// Names of the codeglm server's non-standard protocol pieces. Pure.

/** Server -> client notification `{state, message?}` driving the status bar. */
export const STATUS_NOTIFICATION = 'codeglm/status';

/** The `initializationOptions` / didChangeConfiguration section name. */
export const SETTINGS_SECTION = 'codeglm';

/**
 * The server's entry in `capabilities.experimental` of its `initialize` answer:
 * `{translationLanguages: [{id, displayName, vscodeIds, extensions}, ...]}` (translate.ts reads it).
 */
export const EXPERIMENTAL_SECTION = 'codeglm';

/**
 * VS Code language ids whose documents the client syncs to the server. Needed before the
 * server runs, so not asked of it: the same ids as package.json's `onLanguage:`
 * activation events (a unit test keeps the two equal).
 */
export const DOCUMENT_LANGUAGES: readonly string[] = [
  'python', 'java', 'cpp', 'cuda-cpp', 'c', 'javascript', 'javascriptreact', 'typescript', 'typescriptreact', 'go', 'rust',
];

/**
 * VS Code command ids contributed by the extension (package.json "commands"). The
 * translate ones differ from the server's `codeglm.translateFile` / `...Selection`:
 * vscode-languageclient registers the server's commands under their own ids.
 */
export const COMMANDS = {
  translateFile: 'codeglm.translateFileTo',
  translateSelection: 'codeglm.translateSelectionTo',
  toggleCompletion: 'codeglm.toggleCompletion',
  restartServer: 'codeglm.restartServer',
  showLog: 'codeglm.showLog',
  showLastPrompt: 'codeglm.showPrompt',
} as const;
