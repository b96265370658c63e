// The server's codeglm.showLastPrompt answer as Markdown (pure: unit-tested without VS Code).

/** The server command (workspace/executeCommand) whose answer this renders. */
export const SHOW_LAST_PROMPT = 'codeglm.showLastPrompt';

interface LastPrompt {
  path?: string | null;
  prompt?: string | null;
  promptSuffix?: string | null;
  promptTokens?: number;
  snippets?: Array<{ source?: string | null; kind?: string; name?: string; path?: string | null }>;
  text?: string;
  dropped?: string | null;
}

function fence(text: string): string {
  const ticks = '`'.repeat(Math.max(3, ...Array.from(text.matchAll(/`+/g), (m) => m[0].length + 1)));
  return `${ticks}\n${text}\n${ticks}`;
}

/** The answer as Markdown: what was offered (or why nothing was), the context, the exact prompt. */
export function renderLastPrompt(raw: unknown): string {
  const answer = (raw && typeof raw === 'object' ? raw : {}) as LastPrompt;
  if (typeof answer.prompt !== 'string') return '# CodeGeeX: last prompt\n\nNo completion has run yet.\n';
  const lines = [`# CodeGeeX: last prompt${answer.path ? ` for ${answer.path}` : ''}`, ''];
  if (answer.text) lines.push('Offered:', '', fence(answer.text), '');
  else lines.push(`Nothing was shown: ${answer.dropped || 'the model wrote nothing'}.`, '');
  const snippets = answer.snippets ?? [];
  lines.push(`Context snippets (${snippets.length}):`, '');
  for (const s of snippets) lines.push(`- ${s.source ?? s.kind ?? '?'}: \`${s.name ?? ''}\`${s.path ? ` from ${s.path}` : ''}`);
  lines.push('', `Prompt${answer.promptTokens !== undefined ? ` (${answer.promptTokens} tokens)` : ''}:`, '', fence(answer.prompt));
  if (answer.promptSuffix) lines.push('', 'Text after the cursor (fill-in-the-middle):', '', fence(answer.promptSuffix));
  return `${lines.join('\n')}\n`;
}
