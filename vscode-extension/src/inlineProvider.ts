// Ghost text: VS Code's inline completion provider backed by textDocument/inlineCompletion.
// Accepting (Tab) and accepting word by word (Ctrl+Right) are VS Code's own.
import * as vscode from 'vscode';
import { debounce, GhostItem, INLINE_COMPLETION_METHOD, inlineCompletionParams, parseInlineCompletion } from './inline';
import type { ServerClient } from './serverClient';
import { completionWanted, ExtensionSettings } from './settings';

export class GhostTextProvider implements vscode.InlineCompletionItemProvider {
  constructor(
    private readonly server: ServerClient,
    private readonly settings: () => ExtensionSettings,
    private readonly log: (line: string) => void,
  ) {}

  async provideInlineCompletionItems(
    document: vscode.TextDocument, position: vscode.Position, context: vscode.InlineCompletionContext,
    token: vscode.CancellationToken,
  ): Promise<vscode.InlineCompletionItem[] | undefined> {
    const s = this.settings();
    if (!completionWanted(s, document.languageId)) return undefined;
    const explicit = context.triggerKind === vscode.InlineCompletionTriggerKind.Invoke;
    // typing on cancels `token`: only a pause of debounceMs reaches the server
    if (!explicit && !(await debounce(s.debounceMs, token))) return undefined;
    const client = this.server.running;
    if (!client) return undefined;
    const selected = context.selectedCompletionInfo;
    const params = inlineCompletionParams(
      document.uri.toString(), position.line, position.character, explicit,
      selected && selected.range.isSingleLine ? {
        text: selected.text, line: selected.range.start.line,
        startCharacter: selected.range.start.character, endCharacter: selected.range.end.character,
      } : undefined,
    );
    let items: GhostItem[];
    try {
      items = parseInlineCompletion(await client.sendRequest(INLINE_COMPLETION_METHOD, params, token));
    } catch (e) {
      if (!token.isCancellationRequested) this.log(`inline completion failed: ${e instanceof Error ? e.message : String(e)}`);
      return undefined;
    }
    if (token.isCancellationRequested) return undefined;
    return items.map((item) => new vscode.InlineCompletionItem(item.insertText, item.range && new vscode.Range(
      item.range.start.line, item.range.start.character, item.range.end.line, item.range.end.character,
    )));
  }
}
