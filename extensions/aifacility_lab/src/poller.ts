/**
 * Runs an async task now and then every `intervalMs`, never two at once
 * (the next run is scheduled when the previous one is over, so a slow
 * server is not piled up on). refresh() runs it at once, after an action.
 * While the browser tab is hidden the task is skipped: nobody looks, and
 * the first run after the tab comes back catches up (notifications too).
 */
export class Poller {
  constructor(
    private readonly task: () => Promise<void>,
    private readonly intervalMs: number
  ) {}

  start(): void {
    document.addEventListener('visibilitychange', this.onVisibility);
    void this.refresh();
  }

  /** Runs the task now (or right after the run in progress). */
  async refresh(): Promise<void> {
    if (this.disposed) {
      return;
    }
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.clear();
    this.running = (async () => {
      try {
        do {
          this.again = false;
          await this.task();
        } while (this.again && !this.disposed);
      } catch (error) {
        console.error('aifacility: a poll failed', error);
      } finally {
        this.running = null;
        this.schedule();
      }
    })();
    return this.running;
  }

  stop(): void {
    this.disposed = true;
    this.clear();
    document.removeEventListener('visibilitychange', this.onVisibility);
  }

  private schedule(): void {
    this.clear();
    if (this.disposed) {
      return;
    }
    this.timer = window.setTimeout(() => {
      this.timer = null;
      if (document.hidden) {
        this.schedule();
      } else {
        void this.refresh();
      }
    }, this.intervalMs);
  }

  private clear(): void {
    if (this.timer !== null) {
      window.clearTimeout(this.timer);
      this.timer = null;
    }
  }

  private onVisibility = (): void => {
    if (!document.hidden) {
      void this.refresh();
    }
  };

  private timer: number | null = null;
  private running: Promise<void> | null = null;
  private again = false;
  private disposed = false;
}
