/**
 * Pure text formatting for the status bar and the jobs panel.
 *
 * No DOM and no @jupyterlab import: jest tests these directly.
 */
import { IBudget, IJob } from './types';

/** "h:mm:ss" from an hour on, "m:ss" below; negative and NaN count as 0. */
export function formatDuration(seconds: number): string {
  const total = Number.isFinite(seconds) ? Math.max(0, Math.floor(seconds)) : 0;
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const ss = String(s).padStart(2, '0');
  if (h > 0) {
    return `${h}:${String(m).padStart(2, '0')}:${ss}`;
  }
  return `${m}:${ss}`;
}

/** The status bar's countdown: "1:23:45 left", "12:05 left", or "no limit". */
export function formatTimeLeft(remainingSeconds: number | null): string {
  if (remainingSeconds === null) {
    return 'no limit';
  }
  return `${formatDuration(remainingSeconds)} left`;
}

/** Seconds left now, from an answer's remaining_seconds and when it came. */
export function remainingAt(
  remainingSeconds: number,
  fetchedAtMs: number,
  nowMs: number
): number {
  return Math.max(0, remainingSeconds - (nowMs - fetchedAtMs) / 1000);
}

/** Run time from started to finished (or now); '' before the job started. */
export function jobRuntime(
  job: Pick<IJob, 'started' | 'finished'>,
  nowMs: number
): string {
  if (!job.started) {
    return '';
  }
  const start = Date.parse(job.started);
  const end = job.finished ? Date.parse(job.finished) : nowMs;
  if (Number.isNaN(start) || Number.isNaN(end)) {
    return '';
  }
  return formatDuration((end - start) / 1000);
}

/** "#2 in queue" while the job has a place in its group's queue, else ''. */
export function positionText(job: Pick<IJob, 'position'>): string {
  return job.position === null || job.position === undefined
    ? ''
    : `#${job.position} in queue`;
}

/**
 * Where the job runs: its site when set, else the flavors Kueue admitted it
 * to (distinct values, in order, joined by ", "), else ''.
 */
export function jobWhere(job: Pick<IJob, 'site' | 'admission'>): string {
  if (job.site) {
    return job.site;
  }
  const flavors = job.admission?.flavors;
  if (!flavors) {
    return '';
  }
  const distinct: string[] = [];
  for (const value of Object.values(flavors)) {
    if (value && !distinct.includes(value)) {
      distinct.push(value);
    }
  }
  return distinct.join(', ');
}

/** The highest budget use, or null when there is no budget. */
export function highestBudget(budgets: IBudget[] | null | undefined): IBudget | null {
  let top: IBudget | null = null;
  for (const budget of budgets ?? []) {
    if (top === null || budget.percent > top.percent) {
      top = budget;
    }
  }
  return top;
}

/** "budget 42%" for the highest budget, or '' when there is none. */
export function budgetText(budgets: IBudget[] | null | undefined): string {
  const top = highestBudget(budgets);
  return top === null ? '' : `budget ${Math.round(top.percent)}%`;
}
