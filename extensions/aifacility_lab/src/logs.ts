/**
 * A job's logs in the main area, following the job while it runs.
 *
 * Every 3 s it asks for the job (its phase) and its logs; once the job is
 * Succeeded or Failed it fetches the logs once more and stops. A 409 (no
 * output yet) shows the server's sentence in place of the logs.
 */
import { MainAreaWidget } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { Poller } from './poller';
import { ApiError, jobPath, requestJSON, requestText } from './request';
import { errorMessage } from './show';
import { IJob, isFinal } from './types';

const LOGS_INTERVAL_MS = 3000;

export class LogsView extends Widget {
  constructor(readonly jobName: string) {
    super();
    this.addClass('aifacility-logs-view');
    this.pre = document.createElement('pre');
    this.pre.className = 'aifacility-logs';
    this.pre.textContent = 'Loading…';
    this.node.appendChild(this.pre);
    this.phase = new Widget();
    this.phase.addClass('aifacility-logs-phase');
    this.poller = new Poller(() => this.fetch(), LOGS_INTERVAL_MS);
    this.poller.start();
  }

  /** A toolbar item that says whether the logs still follow the job. */
  readonly phase: Widget;

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this.poller.stop();
    super.dispose();
  }

  private async fetch(): Promise<void> {
    let final = false;
    try {
      const job = await requestJSON<IJob>(jobPath(this.jobName));
      final = isFinal(job.phase);
      this.phase.node.textContent = final ? job.phase : `${job.phase}, following`;
    } catch (error) {
      // A job that is gone will not write more: stop after this fetch.
      final = error instanceof ApiError && error.status === 404;
      this.phase.node.textContent = errorMessage(error);
    }
    await this.fetchLogs();
    if (final) {
      this.poller.stop();
    }
  }

  private async fetchLogs(): Promise<void> {
    const scroller = this.node;
    const atEnd =
      scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 24;
    try {
      this.pre.textContent = await requestText(jobPath(this.jobName, '/logs'));
      this.pre.classList.remove('aifacility-logs-empty');
    } catch (error) {
      // 409: no output yet, say so; any other failure keeps what was shown.
      if (
        (error instanceof ApiError && error.status === 409) ||
        this.pre.classList.contains('aifacility-logs-empty') ||
        this.pre.textContent === 'Loading…'
      ) {
        this.pre.textContent = errorMessage(error);
        this.pre.classList.add('aifacility-logs-empty');
      }
    }
    if (atEnd) {
      scroller.scrollTop = scroller.scrollHeight;
    }
  }

  private readonly pre: HTMLPreElement;
  private readonly poller: Poller;
}

/** The main-area widget, id `aifacility-logs-<name>`, title "Logs: <name>". */
export function createLogsWidget(jobName: string): MainAreaWidget<LogsView> {
  const content = new LogsView(jobName);
  const widget = new MainAreaWidget({ content });
  widget.id = `aifacility-logs-${jobName}`;
  widget.title.label = `Logs: ${jobName}`;
  widget.title.caption = `Output of facility job ${jobName}`;
  widget.title.closable = true;
  widget.toolbar.addItem('phase', content.phase);
  return widget;
}
