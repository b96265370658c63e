// A minimal LSP client over stdio for the integration test, built from the extension's
// own modules (python resolution, launch command, settings, request builders, status
// machine) so that what the test exercises is what the extension sends.
import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  createMessageConnection, MessageConnection, StreamMessageReader, StreamMessageWriter,
} from 'vscode-jsonrpc/node';
import { SETTINGS_SECTION, STATUS_NOTIFICATION } from '../../src/protocol';
import { ExtensionSettings, serverLaunch, serverSettings } from '../../src/settings';
import { initialStatus, nextStatus, parseServerStatus, StatusState } from '../../src/status';

export interface Received {
  statuses: string[];
  progress: unknown[];
  messages: string[];
  appliedEdits: unknown[];
}

export class TestLspClient {
  readonly received: Received = { statuses: [], progress: [], messages: [], appliedEdits: [] };
  status: StatusState;
  stderr = '';
  private readonly proc: ChildProcess;
  readonly connection: MessageConnection;
  private statusWaiters: Array<() => void> = [];

  constructor(python: string, private readonly settings: ExtensionSettings) {
    const launch = serverLaunch(python, settings);
    this.status = initialStatus(settings.enabled);
    this.proc = spawn(launch.command, launch.args, { env: { ...process.env, ...launch.env }, stdio: ['pipe', 'pipe', 'pipe'] });
    this.proc.stderr!.on('data', (d: Buffer) => { this.stderr += d.toString(); });
    this.connection = createMessageConnection(new StreamMessageReader(this.proc.stdout!), new StreamMessageWriter(this.proc.stdin!));
    this.connection.onNotification(STATUS_NOTIFICATION, (params: unknown) => {
      const parsed = parseServerStatus(params);
      if (!parsed) return;
      this.received.statuses.push(parsed.state);
      this.status = nextStatus(this.status, { kind: 'server', ...parsed });
      for (const w of this.statusWaiters.splice(0)) w();
    });
    this.connection.onNotification('window/showMessage', (p: { message: string }) => { this.received.messages.push(p.message); });
    this.connection.onNotification('window/logMessage', () => undefined);
    this.connection.onNotification('$/progress', (p: { value: unknown }) => { this.received.progress.push(p.value); });
    this.connection.onRequest('window/workDoneProgress/create', () => null);
    this.connection.onRequest('workspace/configuration', () => [serverSettings(this.settings)]);
    // what VS Code does with the server's "create this file with this text" edit
    this.connection.onRequest('workspace/applyEdit', (p: { edit: { documentChanges?: unknown[] } }) => {
      this.received.appliedEdits.push(p.edit);
      for (const change of p.edit.documentChanges ?? []) {
        const c = change as { kind?: string; uri?: string; textDocument?: { uri: string }; edits?: Array<{ newText: string }> };
        if (c.kind === 'create' && c.uri) fs.writeFileSync(fileURLToPath(c.uri), '');
        else if (c.textDocument && c.edits) {
          const file = fileURLToPath(c.textDocument.uri);
          fs.writeFileSync(file, fs.readFileSync(file, 'utf8') + c.edits.map((e) => e.newText).join(''));
        }
      }
      return { applied: true };
    });
    this.connection.listen();
  }

  async initialize(rootUri: string | null): Promise<unknown> {
    const result = await this.connection.sendRequest('initialize', {
      processId: process.pid,
      rootUri,
      capabilities: {
        window: { workDoneProgress: true },
        workspace: {
          applyEdit: true, configuration: true,
          workspaceEdit: { documentChanges: true, resourceOperations: ['create'] },
        },
        textDocument: { synchronization: { dynamicRegistration: false }, inlineCompletion: { dynamicRegistration: false } },
      },
      initializationOptions: { [SETTINGS_SECTION]: serverSettings(this.settings) },
    });
    await this.connection.sendNotification('initialized', {});
    return result;
  }

  open(uri: string, languageId: string, text: string): Promise<void> {
    return this.connection.sendNotification('textDocument/didOpen', { textDocument: { uri, languageId, version: 1, text } });
  }

  /** Resolves once the status machine reaches `phase` (or rejects after `ms`). */
  async waitForPhase(phase: StatusState['phase'], ms: number): Promise<void> {
    const end = Date.now() + ms;
    while (this.status.phase !== phase) {
      if (this.proc.exitCode !== null) throw new Error(`the server exited (${this.proc.exitCode}):\n${this.stderr}`);
      if (this.status.phase === 'error') throw new Error(`server error: ${this.status.message}\n${this.stderr}`);
      if (Date.now() > end) throw new Error(`status still ${this.status.phase} after ${ms} ms\n${this.stderr}`);
      await new Promise<void>((r) => { this.statusWaiters.push(r); setTimeout(r, 200); });
    }
  }

  /** shutdown + exit; kills the process if it has not exited within 15 s. Returns its exit code or signal. */
  async close(): Promise<number | string | null> {
    const exited = new Promise<number | string | null>((r) => {
      if (this.proc.exitCode !== null) r(this.proc.exitCode); else this.proc.once('exit', (code, signal) => r(code ?? signal));
    });
    try {
      await Promise.race([this.connection.sendRequest('shutdown'), new Promise((r) => setTimeout(r, 5000))]);
      await this.connection.sendNotification('exit');
    } catch { /* already gone */ }
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 15_000);
    const code = await exited;
    clearTimeout(timer);
    this.connection.dispose();
    return code;
  }
}
