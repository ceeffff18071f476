/**
 * The shapes of the server extension's answers, as CONTRACT.md writes them.
 *
 * Kept free of any @jupyterlab import so that the pure modules (and their
 * jest tests) can use them without a DOM.
 */

export interface ILifetime {
  remaining_seconds: number;
  stop_at: string;
  stop_reason?: string;
  warning: string | null;
  warn_before_seconds: number;
  extendable_hours: number;
  extended_hours?: number;
  message: string;
  profile?: string;
}

export interface IBudget {
  scope: 'user' | 'group' | string;
  name: string;
  percent: number;
  level: 'ok' | 'warned' | 'exhausted' | string;
  message: string;
}

export interface IStatus {
  lifetime: ILifetime | null;
  lifetime_error: string | null;
  accelerator: string | null;
  budgets: IBudget[];
  budget_events?: unknown[];
}

export interface IAcceleratorRequest {
  kind: string;
  name: string;
  count: number;
}

/** What POST aifacility/jobs takes; empty fields are left out. */
export interface IJobRequest {
  notebook?: string;
  command?: string[];
  parameters?: { [key: string]: unknown };
  group?: string;
  cpu?: string;
  memory?: string;
  accelerator?: IAcceleratorRequest;
  offload?: string;
  hours?: number;
}

export interface IJob {
  name: string;
  phase: string;
  position: number | null;
  waiting_for: string | null;
  admission: {
    flavors?: { [resource: string]: string };
    cluster_queue?: string;
  } | null;
  site: string | null;
  node: string | null;
  group: string;
  kind: string;
  command: string | null;
  created: string;
  started: string | null;
  finished: string | null;
  exit_code: number | null;
  reason: string | null;
  output_notebook: string | null;
  request: IJobRequest | null;
}

export interface ICluster {
  name: string;
  status: string;
  workers: number | null;
  dashboard: string | null;
  started: string | null;
}

export interface IJobList {
  jobs: IJob[];
  clusters: ICluster[];
  clusters_error: string | null;
}

export interface IOptions {
  groups: string[];
  offload: string[];
  accelerators: { kind: string; name: string; label: string }[];
  home_root?: boolean;
}

/** Phases after which a job changes no more (no Cancel, logs stop following). */
export const FINAL_PHASES: ReadonlyArray<string> = ['Succeeded', 'Failed'];

export function isFinal(phase: string): boolean {
  return FINAL_PHASES.includes(phase);
}
