// Names of the codeglm server's non-standard protocol pieces. Pure.

/** Server -> client notification `{state, message?}` driving the status bar. */
export const STATUS_NOTIFICATION = 'codeglm/status';

/** The `initializationOptions` / didChangeConfiguration section name. */
export const SETTINGS_SECTION = 'codeglm';

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
} as const;
