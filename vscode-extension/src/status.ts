// The status bar's state machine: events in, a new state out, and how a state looks.
// Pure (no `vscode`); extension.ts feeds it events and renders `present(state)`.

/** What the server reports in `codeglm/status`. */
export type ServerState = 'loading' | 'ready' | 'generating' | 'error' | 'disabled';
export const SERVER_STATES: readonly ServerState[] = ['loading', 'ready', 'generating', 'error', 'disabled'];

/** Server states plus the ones only the client knows about. */
export type Phase = ServerState | 'starting' | 'restarting' | 'stopped';

export interface StatusState {
  phase: Phase;
  message: string;
  /** Completion switched on by the user (the toggle); shown even while the server loads. */
  enabled: boolean;
  /** Restarts after crashes since activation. */
  restarts: number;
  /** Shown next to "ready" after a crash until it expires, so that a restart is noticed. */
  restartNotice: boolean;
}

export type StatusEvent =
  | { kind: 'starting' }
  | { kind: 'server'; state: ServerState; message?: string }
  | { kind: 'crashed'; restart: number; maxRestarts: number }
  | { kind: 'gaveUp'; message: string }
  | { kind: 'failed'; message: string }
  | { kind: 'stopped' }
  | { kind: 'toggled'; enabled: boolean }
  | { kind: 'noticeExpired' };

export function initialStatus(enabled: boolean): StatusState {
  return { phase: 'starting', message: '', enabled, restarts: 0, restartNotice: false };
}

/** Parses a `codeglm/status` notification's params; null when they are malformed. */
export function parseServerStatus(params: unknown): { state: ServerState; message?: string } | null {
  if (typeof params !== 'object' || params === null) return null;
  const { state, message } = params as { state?: unknown; message?: unknown };
  if (typeof state !== 'string' || !SERVER_STATES.includes(state as ServerState)) return null;
  return typeof message === 'string' && message !== '' ? { state: state as ServerState, message } : { state: state as ServerState };
}

export function nextStatus(s: StatusState, e: StatusEvent): StatusState {
  switch (e.kind) {
    case 'starting':
      return { ...s, phase: 'starting', message: '' };
    case 'server': {
      // a "stopped" client ignores late notifications from a dying server
      if (s.phase === 'stopped') return s;
      // the server says "disabled" for a document whose language is off too; the
      // toggle is what the user controls, so "ready" while disabled shows as disabled
      const phase: Phase = e.state === 'ready' && !s.enabled ? 'disabled' : e.state;
      return { ...s, phase, message: e.message ?? '' };
    }
    case 'crashed':
      return {
        ...s, phase: 'restarting', restarts: s.restarts + 1, restartNotice: true,
        message: `The codeglm server stopped unexpectedly; restarting it (${e.restart} of ${e.maxRestarts}).`,
      };
    case 'gaveUp':
    case 'failed':
      return { ...s, phase: 'stopped', message: e.message, restartNotice: false };
    case 'stopped':
      return { ...s, phase: 'stopped', message: 'The codeglm server is stopped.' };
    case 'toggled': {
      let phase = s.phase;
      if (!e.enabled && (phase === 'ready' || phase === 'generating')) phase = 'disabled';
      if (e.enabled && phase === 'disabled') phase = 'ready';
      return { ...s, enabled: e.enabled, phase };
    }
    case 'noticeExpired':
      return { ...s, restartNotice: false };
  }
}

export interface StatusView {
  /** Status bar text with codicons. */
  text: string;
  tooltip: string;
  /** A theme colour id for the background, for states that need attention. */
  background?: 'statusBarItem.errorBackground' | 'statusBarItem.warningBackground';
}

const LABELS: Record<Phase, { icon: string; label: string }> = {
  starting: { icon: '$(loading~spin)', label: 'starting' },
  loading: { icon: '$(loading~spin)', label: 'loading model' },
  ready: { icon: '$(check)', label: 'ready' },
  generating: { icon: '$(sync~spin)', label: 'generating' },
  error: { icon: '$(error)', label: 'error' },
  disabled: { icon: '$(circle-slash)', label: 'disabled' },
  restarting: { icon: '$(debug-restart)', label: 'restarting server' },
  stopped: { icon: '$(error)', label: 'server stopped' },
};

export function present(s: StatusState): StatusView {
  const { icon, label } = LABELS[s.phase];
  const notice = s.restartNotice && s.phase !== 'restarting' ? ' (restarted)' : '';
  const lines = [s.message || `codeglm server: ${label}`];
  if (s.restarts > 0) lines.push(`Restarted ${s.restarts} time${s.restarts === 1 ? '' : 's'} after a crash.`);
  lines.push(s.enabled ? 'Click to turn completion off.' : 'Click to turn completion on.');
  const view: StatusView = { text: `${icon} CodeGeeX: ${label}${notice}`, tooltip: lines.join('\n') };
  if (s.phase === 'error' || s.phase === 'stopped') view.background = 'statusBarItem.errorBackground';
  else if (s.phase === 'restarting') view.background = 'statusBarItem.warningBackground';
  return view;
}
