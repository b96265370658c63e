// The language client's lifecycle: start `python -m lsp`, restart it after a crash (a
// bounded number of times), restart or stop it on request.
import * as vscode from 'vscode';
import {
  CloseAction, CompletionTriggerKind, ErrorAction, LanguageClient, LanguageClientOptions, ServerOptions, State,
  TransportKind,
} from 'vscode-languageclient/node';
import type { WorkDoneProgressBegin, WorkDoneProgressEnd, WorkDoneProgressReport } from 'vscode-languageclient/node';
import { pythonCandidates, resolvePython } from './python';
import { DOCUMENT_LANGUAGES, SETTINGS_SECTION, STATUS_NOTIFICATION } from './protocol';
import { RestartPolicy } from './restartPolicy';
import { ExtensionSettings, RESTART_WINDOW_MS, serverLaunch, serverSettings } from './settings';
import { parseServerStatus } from './status';
import { StatusBar } from './statusBar';

type ProgressValue = WorkDoneProgressBegin | WorkDoneProgressReport | WorkDoneProgressEnd;

export class ServerClient implements vscode.Disposable {
  private client: LanguageClient | undefined;
  private policy: RestartPolicy;
  private stopping = false;
  /** Receives the server's `$/progress` values while a translation runs. */
  progressSink: ((value: ProgressValue) => void) | undefined;

  constructor(
    private readonly output: vscode.OutputChannel,
    private readonly status: StatusBar,
    private readonly settings: () => ExtensionSettings,
  ) {
    this.policy = new RestartPolicy(settings().maxRestarts, RESTART_WINDOW_MS);
  }

  /** The running client, or undefined while none is (starting, crashed, stopped). */
  get running(): LanguageClient | undefined {
    return this.client?.state === State.Running ? this.client : undefined;
  }

  async start(): Promise<void> {
    const s = this.settings();
    this.status.apply({ kind: 'starting' });
    const folders = (vscode.workspace.workspaceFolders ?? []).filter((f) => f.uri.scheme === 'file').map((f) => f.uri.fsPath);
    const python = resolvePython(pythonCandidates(s.pythonPath, folders, process.env), undefined, s.pythonPath !== '');
    if (!python.ok) {
      this.fail(python.message, true);
      return;
    }
    const launch = serverLaunch(python.python, s);
    this.output.appendLine(`starting: ${launch.command} ${launch.args.join(' ')}`);
    const serverOptions: ServerOptions = {
      command: launch.command,
      args: launch.args,
      transport: TransportKind.stdio,
      options: { env: { ...process.env, ...launch.env } },
    };
    const client = new LanguageClient('codeglm', 'CodeGeeX', serverOptions, this.clientOptions(s));
    client.onNotification(STATUS_NOTIFICATION, (params: unknown) => {
      const parsed = parseServerStatus(params);
      if (parsed) this.status.apply({ kind: 'server', ...parsed });
    });
    this.client = client;
    this.stopping = false;
    try {
      await client.start();
    } catch (e) {
      // a crash during start-up also reaches errorHandler.closed(), which decides on restarts
      this.output.appendLine(`the server did not start: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  private clientOptions(s: ExtensionSettings): LanguageClientOptions {
    return {
      documentSelector: DOCUMENT_LANGUAGES.flatMap((language) => [{ scheme: 'file', language }, { scheme: 'untitled', language }]),
      outputChannel: this.output,
      initializationOptions: { [SETTINGS_SECTION]: serverSettings(s) },
      errorHandler: {
        error: (_error, _message, count) => ({ action: (count ?? 0) <= 3 ? ErrorAction.Continue : ErrorAction.Shutdown, handled: true }),
        closed: () => {
          if (this.stopping) return { action: CloseAction.DoNotRestart, handled: true };
          const decision = this.policy.crashed(Date.now());
          if (decision.restart) {
            this.output.appendLine(`the server stopped unexpectedly: restarting it (${decision.attempt} of ${decision.maxRestarts})`);
            this.status.apply({ kind: 'crashed', restart: decision.attempt, maxRestarts: decision.maxRestarts });
            return { action: CloseAction.Restart, handled: true };
          }
          this.fail(decision.message, false);
          return { action: CloseAction.DoNotRestart, handled: true };
        },
      },
      middleware: {
        // The server also answers textDocument/completion, which runs the model; ghost
        // text already does that on every pause, so the suggest widget asks only when
        // invoked explicitly (Ctrl+Space), not on every trigger character.
        provideCompletionItem: (document, position, context, token, next) =>
          context.triggerKind === CompletionTriggerKind.Invoked ? next(document, position, context, token) : undefined,
        handleWorkDoneProgress: (token, params, next) => {
          this.progressSink?.(params);
          next(token, params);
        },
      },
    };
  }

  private fail(message: string, offerSettings: boolean): void {
    this.output.appendLine(message);
    this.status.apply({ kind: 'failed', message });
    const actions = offerSettings ? ['Open Settings', 'Show Log'] : ['Restart Server', 'Show Log'];
    void vscode.window.showErrorMessage(`CodeGeeX: ${message}`, ...actions).then((choice) => {
      if (choice === 'Open Settings') void vscode.commands.executeCommand('workbench.action.openSettings', 'codeglm.pythonPath');
      if (choice === 'Show Log') this.output.show(true);
      if (choice === 'Restart Server') void this.restart();
    });
  }

  /** Stop the current server (if any) and start a new one with the current settings. */
  async restart(): Promise<void> {
    await this.stop();
    this.policy = new RestartPolicy(this.settings().maxRestarts, RESTART_WINDOW_MS);
    await this.start();
  }

  async stop(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    if (!client) return;
    this.stopping = true;
    try {
      // dispose() = shutdown + exit, then kills the process if it has not gone in time
      await client.dispose(5000);
    } catch (e) {
      this.output.appendLine(`stopping the server: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  /** Send changed settings to the live server. */
  async sendSettings(s: ExtensionSettings): Promise<void> {
    const client = this.running;
    if (!client) return;
    await client.sendNotification('workspace/didChangeConfiguration', { settings: { [SETTINGS_SECTION]: serverSettings(s) } });
  }

  dispose(): void {
    void this.stop();
  }
}
