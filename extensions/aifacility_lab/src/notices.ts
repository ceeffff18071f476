/**
 * Which notifications to show, decided apart from showing them.
 *
 * index.ts hands what the server said to these functions and passes each
 * returned notice to JupyterLab's Notification API. Nothing here imports
 * @jupyterlab, so the rules are unit-tested with a fake storage.
 *
 * Memory lives in localStorage (one key per fact) so that a page reload,
 * or a second tab of the same session, does not notify twice. Keys carry a
 * prefix with the server's base URL: on a JupyterHub every user's server
 * shares one browser origin, and so one localStorage.
 */
import { jobWhere } from './format';
import { IBudget, IJob, ILifetime, isFinal } from './types';

export type NoticeLevel = 'info' | 'success' | 'warning' | 'error';

export interface INotice {
  level: NoticeLevel;
  message: string;
}

/** The part of the DOM's Storage used here (a fake one in the tests). */
export interface IStorageLike {
  readonly length: number;
  key(index: number): string | null;
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/**
 * Prefixed key-value memory over a Storage; falls back to a Map when there
 * is no storage or it refuses (private browsing, quota): notifications then
 * are remembered for this page only, which is still correct within it.
 */
export class Memory {
  constructor(
    storage: IStorageLike | null,
    private readonly prefix: string
  ) {
    this.storage = storage;
  }

  get(key: string): string | null {
    if (this.storage) {
      try {
        return this.storage.getItem(this.prefix + key);
      } catch {
        this.storage = null;
      }
    }
    return this.fallback.get(key) ?? null;
  }

  has(key: string): boolean {
    return this.get(key) !== null;
  }

  set(key: string, value: string): void {
    if (this.storage) {
      try {
        this.storage.setItem(this.prefix + key, value);
        return;
      } catch {
        this.storage = null;
      }
    }
    this.fallback.set(key, value);
  }

  remove(key: string): void {
    try {
      this.storage?.removeItem(this.prefix + key);
    } catch {
      // Nothing to do: the key stays, which only keeps a notice silenced.
    }
    this.fallback.delete(key);
  }

  /** The keys (without the prefix) that start with `start`. */
  keys(start: string): string[] {
    const found = new Set<string>();
    if (this.storage) {
      try {
        for (let i = 0; i < this.storage.length; i++) {
          const key = this.storage.key(i);
          if (key !== null && key.startsWith(this.prefix + start)) {
            found.add(key.slice(this.prefix.length));
          }
        }
      } catch {
        // Fall through to the page-local memory.
      }
    }
    for (const key of this.fallback.keys()) {
      if (key.startsWith(start)) {
        found.add(key);
      }
    }
    return [...found];
  }

  private storage: IStorageLike | null;
  private readonly fallback = new Map<string, string>();
}

/** Under this many seconds left, a last warning (besides the server's window). */
export const LAST_WARNING_SECONDS = 300;

/**
 * Lifetime warnings for `remaining` seconds left (the local countdown).
 *
 * Once per deadline (stop_at: an extension makes a new one) when the time
 * left is inside warn_before_seconds, and once more under 5 minutes. A page
 * opened already inside the window warns once too: the person may not have
 * seen the warning elsewhere, and memory stops a reload from repeating it.
 */
export function lifetimeNotices(
  lifetime: ILifetime | null,
  remaining: number,
  memory: Memory
): INotice[] {
  if (lifetime === null) {
    return [];
  }
  const deadline = `lifetime:${lifetime.stop_at}:`;
  // Forget the warnings of earlier deadlines (before an extension).
  for (const key of memory.keys('lifetime:')) {
    if (!key.startsWith(deadline)) {
      memory.remove(key);
    }
  }
  const text = lifetime.warning || lifetime.message;
  if (remaining < LAST_WARNING_SECONDS) {
    if (memory.has(deadline + 'last')) {
      return [];
    }
    // The last warning stands for the window's one as well.
    memory.set(deadline + 'last', '1');
    memory.set(deadline + 'window', '1');
    return [{ level: 'warning', message: `Less than 5 minutes left. ${text}` }];
  }
  if (remaining < lifetime.warn_before_seconds && !memory.has(deadline + 'window')) {
    memory.set(deadline + 'window', '1');
    return [{ level: 'warning', message: text }];
  }
  return [];
}

/** Phases that mean the job was admitted (left the queue to run). */
const ADMITTED_PHASES = ['Starting', 'Running'];

/**
 * Notifies job transitions seen by this page: Queued -> Starting/Running
 * (admitted), any unfinished phase -> Succeeded or Failed.
 *
 * The phase a job had "before" is the one this page saw at its previous
 * poll, or, at a job's first sight in this page, the one remembered in
 * localStorage from an earlier page. A job never seen unfinished (it ended
 * before any page of ours looked) does not notify. Each (job, phase) notice
 * is remembered, so a second tab or a reload stays silent.
 */
export class JobWatcher {
  constructor(private readonly memory: Memory) {}

  /**
   * Takes one poll's jobs. `complete` says the list is the whole of the
   * server's: memory of jobs no longer in it is then dropped.
   */
  update(jobs: IJob[], complete = true): INotice[] {
    const notices: INotice[] = [];
    for (const job of jobs) {
      notices.push(...this.observe(job));
    }
    if (complete) {
      const names = new Set(jobs.map(job => job.name));
      for (const key of this.memory.keys('job:')) {
        const name = key.slice('job:'.length, key.lastIndexOf(':'));
        if (!names.has(name)) {
          this.memory.remove(key);
          this.seen.delete(name);
        }
      }
    }
    return notices;
  }

  /** Takes one job model (a poll's, or the answer to a submission). */
  observe(job: IJob): INotice[] {
    const seenKey = `job:${job.name}:seen`;
    const before = this.seen.get(job.name) ?? this.memory.get(seenKey);
    this.seen.set(job.name, job.phase);
    this.memory.set(seenKey, job.phase);
    if (before === null || before === job.phase || isFinal(before)) {
      return [];
    }
    let notice: INotice | null = null;
    let fact = job.phase;
    if (job.phase === 'Succeeded') {
      notice = { level: 'success', message: `Job ${job.name} succeeded` };
    } else if (job.phase === 'Failed') {
      const reason = job.reason ? `: ${job.reason}` : '';
      notice = { level: 'error', message: `Job ${job.name} failed${reason}` };
    } else if (before === 'Queued' && ADMITTED_PHASES.includes(job.phase)) {
      const where = jobWhere(job);
      fact = 'admitted';
      notice = {
        level: 'info',
        message: `Job ${job.name} admitted${where ? ` (${where})` : ''}`
      };
    }
    const factKey = `job:${job.name}:${fact}`;
    if (notice === null || this.memory.has(factKey)) {
      return [];
    }
    this.memory.set(factKey, '1');
    return [notice];
  }

  private readonly seen = new Map<string, string>();
}

/**
 * Budget notices: "warned" (>= 80 %) as a warning, "exhausted" as an error,
 * once per (scope, name, level). A budget back at "ok" (a new period)
 * forgets its notices so that the next period warns again.
 */
export function budgetNotices(budgets: IBudget[], memory: Memory): INotice[] {
  const notices: INotice[] = [];
  for (const budget of budgets) {
    const base = `budget:${budget.scope}:${budget.name}:`;
    if (budget.level === 'ok') {
      memory.remove(base + 'warned');
      memory.remove(base + 'exhausted');
      continue;
    }
    const level: NoticeLevel | null =
      budget.level === 'warned' ? 'warning' : budget.level === 'exhausted' ? 'error' : null;
    if (level === null || memory.has(base + budget.level)) {
      continue;
    }
    memory.set(base + budget.level, '1');
    const message =
      budget.message ||
      `The ${budget.scope} budget ${budget.name} is at ${Math.round(budget.percent)}%.`;
    notices.push({ level, message });
  }
  return notices;
}
