/**
 * The left sidebar: the person's facility jobs and Dask clusters, and the
 * "Submit notebook as job" button.
 *
 * All state comes from GET aifacility/jobs (every 5 s, and at once after
 * an action), so a page reload shows the same. Each poll also feeds the
 * JobWatcher, whose notices tell about transitions; the panel does this
 * whether shown or not. A failed poll shows a `.aifacility-error` line and
 * keeps the last list.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { jobRuntime, jobWhere, positionText } from './format';
import { jobsIcon } from './icon';
import { buildJobRequest, ISubmitForm } from './jobrequest';
import { JobWatcher, Memory } from './notices';
import { Poller } from './poller';
import { jobPath, requestJSON } from './request';
import { errorMessage, notify, showNotices } from './show';
import { askJobForm } from './submit';
import { ICluster, IJob, IJobList, IJobRequest, IOptions, isFinal } from './types';

const JOBS_INTERVAL_MS = 5000;

/** The notebook the person has open, as the panel needs it. */
export interface ICurrentNotebook {
  path: string;
  /** Saves it when it has unsaved changes: the job runs the file on disk. */
  saveIfDirty(): Promise<void>;
}

export interface IPanelHooks {
  currentNotebook(): ICurrentNotebook | null;
  openLogs(jobName: string): void;
  openFile(path: string): void;
}

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className: string,
  text = ''
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.className = className;
  node.textContent = text;
  return node;
}

export class JobsPanel extends Widget {
  constructor(
    memory: Memory,
    private readonly hooks: IPanelHooks
  ) {
    super();
    this.id = 'aifacility-jobs';
    this.addClass('aifacility-jobs-panel');
    this.title.icon = jobsIcon;
    this.title.caption = 'Facility jobs';
    this.watcher = new JobWatcher(memory);

    const header = el('div', 'aifacility-jobs-header');
    header.appendChild(el('h2', 'aifacility-jobs-title', 'Facility jobs'));
    const submit = el('button', 'aifacility-submit jp-mod-styled jp-mod-accept', 'Submit notebook as job');
    submit.type = 'button';
    submit.addEventListener('click', () => void this.busy(submit, () => this.submitNotebook()));
    header.appendChild(submit);
    this.errorNode = el('div', 'aifacility-error');
    this.errorNode.hidden = true;
    this.jobsEmpty = el('p', 'aifacility-empty', 'No jobs yet.');
    this.jobList = el('ul', 'aifacility-job-list');
    this.clustersError = el('p', 'aifacility-note aifacility-clusters-error');
    this.clustersError.hidden = true;
    this.clustersEmpty = el('p', 'aifacility-empty', 'No Dask clusters.');
    this.clusterList = el('ul', 'aifacility-cluster-list');
    this.node.append(
      header,
      this.errorNode,
      el('h3', 'aifacility-section', 'Jobs'),
      this.jobsEmpty,
      this.jobList,
      el('h3', 'aifacility-section', 'Dask clusters'),
      this.clustersError,
      this.clustersEmpty,
      this.clusterList
    );

    this.poller = new Poller(() => this.fetch(), JOBS_INTERVAL_MS);
    this.poller.start();
    // Running jobs' run times move every second between polls.
    this.ticker = window.setInterval(() => this.isVisible && this.renderRuntimes(), 1000);
  }

  /** Polls now (after an action, or from a command). */
  refresh(): Promise<void> {
    return this.poller.refresh();
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this.poller.stop();
    window.clearInterval(this.ticker);
    super.dispose();
  }

  private async fetch(): Promise<void> {
    let list: IJobList;
    try {
      list = await requestJSON<IJobList>('jobs');
    } catch (error) {
      this.errorNode.textContent = errorMessage(error);
      this.errorNode.hidden = false;
      return;
    }
    this.errorNode.hidden = true;
    this.errorNode.textContent = '';
    showNotices(this.watcher.update(list.jobs ?? []));
    this.renderJobs(list.jobs ?? []);
    this.renderClusters(list.clusters ?? [], list.clusters_error ?? null);
  }

  // Jobs are re-drawn only when their model changed, so a button under the
  // pointer or with focus is not replaced every 5 s.
  private renderJobs(jobs: IJob[]): void {
    const next = new Map<string, { signature: string; item: HTMLLIElement; job: IJob }>();
    for (const job of jobs) {
      const signature = JSON.stringify(job);
      const old = this.jobItems.get(job.name);
      const item = old && old.signature === signature ? old.item : this.jobItem(job);
      next.set(job.name, { signature, item, job });
    }
    // Put the items in the server's order, reusing the unchanged ones.
    const items = [...next.values()].map(entry => entry.item);
    items.forEach((item, index) => {
      if (this.jobList.children[index] !== item) {
        this.jobList.insertBefore(item, this.jobList.children[index] ?? null);
      }
    });
    while (this.jobList.children.length > items.length) {
      this.jobList.lastElementChild!.remove();
    }
    this.jobItems = next;
    this.jobsEmpty.hidden = jobs.length > 0;
    this.renderRuntimes();
  }

  private renderRuntimes(): void {
    const now = Date.now();
    for (const { item, job } of this.jobItems.values()) {
      const node = item.querySelector('.aifacility-job-runtime');
      if (node) {
        node.textContent = jobRuntime(job, now);
      }
    }
  }

  private jobItem(job: IJob): HTMLLIElement {
    const item = el('li', 'aifacility-job');
    item.dataset.job = job.name;
    const head = el('div', 'aifacility-job-head');
    const phase = el('span', 'aifacility-job-phase', job.phase);
    phase.dataset.phase = job.phase;
    head.append(el('span', 'aifacility-job-name', job.name), phase);
    head.title = [job.command, job.node ? `node ${job.node}` : '', job.exit_code !== null ? `exit code ${job.exit_code}` : '']
      .filter(Boolean)
      .join('\n');
    const details = el('div', 'aifacility-job-details');
    details.append(
      el('span', 'aifacility-job-position', positionText(job)),
      el('span', 'aifacility-job-where', jobWhere(job)),
      el('span', 'aifacility-job-runtime', jobRuntime(job, Date.now()))
    );
    item.append(head, details);
    const note = job.phase === 'Failed' ? job.reason : (job.waiting_for ?? job.reason);
    if (note) {
      item.appendChild(el('div', 'aifacility-job-note', note));
    }

    const actions = el('div', 'aifacility-job-actions');
    const button = (className: string, label: string, action: () => Promise<void> | void) => {
      const node = el('button', `${className} jp-mod-styled`, label);
      node.type = 'button';
      node.addEventListener('click', () => void this.busy(node, async () => action()));
      actions.appendChild(node);
    };
    button('aifacility-job-logs', 'Logs', () => this.hooks.openLogs(job.name));
    if (job.output_notebook) {
      const path = job.output_notebook;
      button('aifacility-job-output', 'Output', () => this.hooks.openFile(path));
    }
    if (!isFinal(job.phase)) {
      button('aifacility-job-cancel', 'Cancel', () => this.cancel(job.name));
    }
    if (job.request) {
      const request = job.request;
      button('aifacility-job-resubmit', 'Resubmit', () => this.post(request));
    }
    item.appendChild(actions);
    return item;
  }

  private renderClusters(clusters: ICluster[], error: string | null): void {
    this.clustersError.textContent = error ?? '';
    this.clustersError.hidden = !error;
    this.clustersEmpty.hidden = clusters.length > 0 || !!error;
    this.clusterList.replaceChildren(
      ...clusters.map(cluster => {
        const item = el('li', 'aifacility-cluster');
        item.dataset.cluster = cluster.name;
        const workers =
          cluster.workers === null ? '' : `${cluster.workers} worker${cluster.workers === 1 ? '' : 's'}`;
        item.append(
          el('span', 'aifacility-cluster-name', cluster.name),
          el('span', 'aifacility-cluster-status', cluster.status),
          el('span', 'aifacility-cluster-workers', workers)
        );
        const href = safeUrl(cluster.dashboard);
        if (href) {
          const link = el('a', 'aifacility-cluster-dashboard', 'Dashboard');
          link.href = href;
          link.target = '_blank';
          link.rel = 'noopener noreferrer';
          item.appendChild(link);
        }
        return item;
      })
    );
  }

  private async cancel(name: string): Promise<void> {
    // A cancelled job's work is lost: ask first.
    const answer = await showDialog({
      title: 'Cancel job',
      body: `Cancel ${name}? Its work so far is lost.`,
      buttons: [Dialog.cancelButton({ label: 'Keep' }), Dialog.warnButton({ label: 'Cancel job' })]
    });
    if (!answer.button.accept) {
      return;
    }
    try {
      await requestJSON<null>(jobPath(name), { method: 'DELETE' });
    } catch (error) {
      notify('error', errorMessage(error));
    }
    await this.refresh();
  }

  /** POSTs a JobRequest (a new one, or a resubmitted one). */
  private async post(request: IJobRequest): Promise<void> {
    try {
      const job = await requestJSON<IJob>('jobs', { method: 'POST', body: JSON.stringify(request) });
      // What the answer says counts as seen: a fast job still notifies.
      showNotices(this.watcher.observe(job));
      notify('info', `Job ${job.name} submitted`);
    } catch (error) {
      notify('error', errorMessage(error));
    }
    await this.refresh();
  }

  private async submitNotebook(): Promise<void> {
    const notebook = this.hooks.currentNotebook();
    if (notebook === null) {
      notify('warning', 'Open a notebook first', 5000);
      return;
    }
    let options: IOptions;
    try {
      options = await requestJSON<IOptions>('options');
    } catch (error) {
      notify('error', errorMessage(error));
      return;
    }
    const values = await askJobForm(notebook.path, options, this.lastForms.get(notebook.path) ?? {});
    if (values === null) {
      return;
    }
    // Kept so that a refused form reopens with what was typed.
    this.lastForms.set(notebook.path, values);
    const built = buildJobRequest(notebook.path, values);
    if (!built.ok) {
      notify('error', built.error);
      return;
    }
    try {
      await notebook.saveIfDirty();
    } catch (error) {
      notify('error', `The notebook could not be saved: ${errorMessage(error)}`);
      return;
    }
    await this.post(built.request);
  }

  /** Disables a button while its action runs (no double submissions). */
  private async busy(button: HTMLButtonElement, action: () => Promise<void>): Promise<void> {
    button.disabled = true;
    try {
      await action();
    } catch (error) {
      notify('error', errorMessage(error));
    } finally {
      button.disabled = false;
    }
  }

  private readonly watcher: JobWatcher;
  private readonly poller: Poller;
  private readonly ticker: number;
  private readonly errorNode: HTMLDivElement;
  private readonly jobsEmpty: HTMLParagraphElement;
  private readonly jobList: HTMLUListElement;
  private readonly clustersError: HTMLParagraphElement;
  private readonly clustersEmpty: HTMLParagraphElement;
  private readonly clusterList: HTMLUListElement;
  private jobItems = new Map<string, { signature: string; item: HTMLLIElement; job: IJob }>();
  private readonly lastForms = new Map<string, Partial<ISubmitForm>>();
}

/** Only http(s) links (relative ones resolve to the page's): no javascript:. */
function safeUrl(url: string | null): string | null {
  if (!url) {
    return null;
  }
  try {
    const parsed = new URL(url, window.location.href);
    return parsed.protocol === 'http:' || parsed.protocol === 'https:' ? parsed.href : null;
  } catch {
    return null;
  }
}
