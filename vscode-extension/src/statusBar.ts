// The status bar item: renders status.ts's state; clicking it toggles completion.
import * as vscode from 'vscode';
import { COMMANDS } from './protocol';
import { initialStatus, nextStatus, present, StatusEvent, StatusState } from './status';

/** How long "(restarted)" stays next to "ready" once the restarted server is ready. */
const RESTART_NOTICE_MS = 30_000;

export class StatusBar implements vscode.Disposable {
  private state: StatusState;
  private readonly item: vscode.StatusBarItem;
  private noticeTimer: NodeJS.Timeout | undefined;

  constructor(enabled: boolean, private readonly log: (line: string) => void) {
    this.state = initialStatus(enabled);
    this.item = vscode.window.createStatusBarItem('codeglm.status', vscode.StatusBarAlignment.Right, 100);
    this.item.name = 'CodeGeeX';
    this.item.command = COMMANDS.toggleCompletion;
    this.render();
    this.item.show();
  }

  get current(): StatusState {
    return this.state;
  }

  apply(event: StatusEvent): void {
    const before = this.state;
    this.state = nextStatus(before, event);
    if (before.phase !== this.state.phase) this.log(`status: ${before.phase} -> ${this.state.phase}${this.state.message ? ` (${this.state.message})` : ''}`);
    if (event.kind === 'crashed') {
      clearTimeout(this.noticeTimer);
      this.noticeTimer = undefined;
    }
    // the notice counts down from the first "ready" of the restarted server
    if (this.state.restartNotice && this.state.phase === 'ready' && this.noticeTimer === undefined) {
      this.noticeTimer = setTimeout(() => {
        this.noticeTimer = undefined;
        this.apply({ kind: 'noticeExpired' });
      }, RESTART_NOTICE_MS);
    }
    this.render();
  }

  private render(): void {
    const view = present(this.state);
    this.item.text = view.text;
    this.item.tooltip = view.tooltip;
    this.item.backgroundColor = view.background ? new vscode.ThemeColor(view.background) : undefined;
  }

  dispose(): void {
    clearTimeout(this.noticeTimer);
    this.item.dispose();
  }
}
