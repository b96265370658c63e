// How often a crashed server is restarted: at most `maxRestarts` crashes within
// `windowMs`; one more and the extension stops and says so. Pure (clock passed in).

export type CrashDecision =
  | { restart: true; attempt: number; maxRestarts: number }
  | { restart: false; crashes: number; message: string };

export class RestartPolicy {
  private crashes: number[] = [];

  constructor(private readonly maxRestarts: number, private readonly windowMs: number) {}

  /** Record a crash at `now` (ms) and decide whether to restart. */
  crashed(now: number): CrashDecision {
    this.crashes = this.crashes.filter((t) => now - t < this.windowMs);
    this.crashes.push(now);
    const attempt = this.crashes.length;
    if (attempt <= this.maxRestarts) return { restart: true, attempt, maxRestarts: this.maxRestarts };
    const minutes = Math.round(this.windowMs / 60_000);
    return {
      restart: false,
      crashes: attempt,
      message: `The codeglm server crashed ${attempt} times in the last ${minutes} minutes and will not be `
        + 'restarted again. See "CodeGeeX: Show Log" for why, then run "CodeGeeX: Restart Server".',
    };
  }

  /** Forget past crashes (a restart the user asked for starts with a full budget). */
  reset(): void {
    this.crashes = [];
  }
}
