// "CodeGeeX: Show Last Prompt": the server's codeglm.showLastPrompt answer as a Markdown
// document, so a user can see why a completion came out as it did (or did not come out).
import * as vscode from 'vscode';
import { ExecuteCommandRequest } from 'vscode-languageclient/node';
import { renderLastPrompt, SHOW_LAST_PROMPT } from './lastPromptView';
import type { ServerClient } from './serverClient';

export async function showLastPrompt(server: ServerClient): Promise<void> {
  const client = server.running;
  if (!client) {
    void vscode.window.showWarningMessage('CodeGeeX: the server is not running.');
    return;
  }
  const raw = await client.sendRequest(ExecuteCommandRequest.type, { command: SHOW_LAST_PROMPT, arguments: [] });
  const document = await vscode.workspace.openTextDocument({ content: renderLastPrompt(raw), language: 'markdown' });
  await vscode.window.showTextDocument(document, { preview: true });
}
