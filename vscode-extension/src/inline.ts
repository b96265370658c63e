// Inline completion's pure parts: the request, reading the answer, and the debounce.
// No `vscode` import; inlineProvider.ts adapts these to VS Code's API.
import { InlineCompletionRequest } from 'vscode-languageserver-protocol';
import type { InlineCompletionParams } from 'vscode-languageserver-protocol';

export const INLINE_COMPLETION_METHOD = InlineCompletionRequest.method; // 'textDocument/inlineCompletion'

/**
 * LSP 3.18's InlineCompletionTriggerKind: 1 = invoked explicitly, 2 = automatic (typing).
 * vscode-languageserver-protocol 3.17.5 still has the proposal's 0/1, which a 3.18
 * server (lsprotocol) rejects as invalid params, hence the literal numbers.
 */
export const TRIGGER_INVOKED = 1;
export const TRIGGER_AUTOMATIC = 2;

export function inlineCompletionParams(
  uri: string, line: number, character: number, explicit: boolean,
  selectedCompletion?: { text: string; line: number; startCharacter: number; endCharacter: number },
): InlineCompletionParams {
  const params: InlineCompletionParams = {
    textDocument: { uri },
    position: { line, character },
    context: { triggerKind: (explicit ? TRIGGER_INVOKED : TRIGGER_AUTOMATIC) as InlineCompletionParams['context']['triggerKind'] },
  };
  if (selectedCompletion) {
    params.context.selectedCompletionInfo = {
      text: selectedCompletion.text,
      range: {
        start: { line: selectedCompletion.line, character: selectedCompletion.startCharacter },
        end: { line: selectedCompletion.line, character: selectedCompletion.endCharacter },
      },
    };
  }
  return params;
}

export interface GhostItem {
  insertText: string;
  range?: { start: { line: number; character: number }; end: { line: number; character: number } };
}

/** The items of an InlineCompletionList or item array; empty texts are dropped. */
export function parseInlineCompletion(raw: unknown): GhostItem[] {
  if (raw === null || raw === undefined) return [];
  const list = Array.isArray(raw) ? raw : (raw as { items?: unknown }).items;
  if (!Array.isArray(list)) return [];
  const items: GhostItem[] = [];
  for (const it of list) {
    if (typeof it !== 'object' || it === null) continue;
    const o = it as { insertText?: unknown; range?: unknown };
    // a StringValue (snippet) carries its text in .value
    const text = typeof o.insertText === 'string' ? o.insertText
      : typeof o.insertText === 'object' && o.insertText !== null ? (o.insertText as { value?: unknown }).value : undefined;
    if (typeof text !== 'string' || text === '') continue;
    const item: GhostItem = { insertText: text };
    if (o.range && typeof o.range === 'object') item.range = o.range as GhostItem['range'];
    items.push(item);
  }
  return items;
}

/** Something that can be cancelled: VS Code's CancellationToken has this shape. */
export interface Cancellable {
  readonly isCancellationRequested: boolean;
  onCancellationRequested(listener: () => unknown): { dispose(): unknown };
}

/**
 * Waits `ms`, resolving true, or false as soon as `token` is cancelled: VS Code cancels
 * an inline completion request when the user types on, so only a pause of `ms`
 * reaches the server.
 */
export function debounce(ms: number, token: Cancellable): Promise<boolean> {
  if (token.isCancellationRequested) return Promise.resolve(false);
  if (ms <= 0) return Promise.resolve(true);
  return new Promise((resolve) => {
    const sub = token.onCancellationRequested(() => { clearTimeout(timer); sub.dispose(); resolve(false); });
    const timer = setTimeout(() => { sub.dispose(); resolve(!token.isCancellationRequested); }, ms);
  });
}
