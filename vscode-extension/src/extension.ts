// Entry point: wires settings, the status bar, the server client, ghost text and commands.
import * as vscode from 'vscode';
import { GhostTextProvider } from './inlineProvider';
import { showLastPrompt } from './lastPrompt';
import { COMMANDS, SETTINGS_SECTION } from './protocol';
import { ServerClient } from './serverClient';
import { ExtensionSettings, needsRestart, readSettings } from './settings';
import { StatusBar } from './statusBar';
import { translateCommand } from './translateCommand';

let server: ServerClient | undefined;

function currentSettings(): ExtensionSettings {
  const config = vscode.workspace.getConfiguration(SETTINGS_SECTION);
  return readSettings((key) => config.get(key));
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const output = vscode.window.createOutputChannel('CodeGeeX');
  const log = (line: string): void => output.appendLine(`[${new Date().toISOString()}] ${line}`);
  let settings = currentSettings();
  const status = new StatusBar(settings.enabled, log);
  server = new ServerClient(output, status, () => settings);
  const s = server;
  context.subscriptions.push(
    output, status, s,
    vscode.languages.registerInlineCompletionItemProvider({ pattern: '**' }, new GhostTextProvider(s, () => settings, log)),
    vscode.commands.registerCommand(COMMANDS.translateFile, (target?: string) => translateCommand(s, log, false, target)),
    vscode.commands.registerCommand(COMMANDS.translateSelection, (target?: string) => translateCommand(s, log, true, target)),
    vscode.commands.registerCommand(COMMANDS.toggleCompletion, () => toggleCompletion()),
    vscode.commands.registerCommand(COMMANDS.restartServer, async () => {
      log('restart asked for');
      await s.restart();
    }),
    vscode.commands.registerCommand(COMMANDS.showLog, () => output.show(true)),
    vscode.commands.registerCommand(COMMANDS.showLastPrompt, () => showLastPrompt(s)),
    vscode.workspace.onDidChangeConfiguration(async (e) => {
      if (!e.affectsConfiguration(SETTINGS_SECTION)) return;
      const before = settings;
      settings = currentSettings();
      const changed = (Object.keys(settings) as Array<keyof ExtensionSettings>)
        .filter((k) => JSON.stringify(before[k]) !== JSON.stringify(settings[k]));
      log(`settings changed: ${changed.map((k) => `${k}=${JSON.stringify(settings[k])}`).join(', ') || '(none of ours)'}`);
      if (before.enabled !== settings.enabled) status.apply({ kind: 'toggled', enabled: settings.enabled });
      if (needsRestart(before, settings)) await s.restart();
      else await s.sendSettings(settings);
    }),
  );
  log('CodeGeeX extension activated');
  await s.start();
}

/** Flip `codeglm.enabled` where it is set (workspace if it is set there, else user settings). */
async function toggleCompletion(): Promise<void> {
  const config = vscode.workspace.getConfiguration(SETTINGS_SECTION);
  const now = readSettings((key) => config.get(key)).enabled;
  const where = config.inspect('enabled')?.workspaceValue !== undefined
    ? vscode.ConfigurationTarget.Workspace : vscode.ConfigurationTarget.Global;
  await config.update('enabled', !now, where);
  void vscode.window.setStatusBarMessage(`CodeGeeX completion ${now ? 'off' : 'on'}`, 3000);
}

export async function deactivate(): Promise<void> {
  await server?.stop();
  server = undefined;
}
