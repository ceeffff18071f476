/**
 * The status-bar item: time left (a local countdown), accelerator, budget.
 *
 * GET aifacility/status is fetched every 30 s; between answers the time
 * left counts down locally every second from the last remaining_seconds,
 * which also drives the lifetime warnings on time. A click opens the
 * "Session" dialog, with an Extend form while the profile allows more.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { budgetText, formatTimeLeft, remainingAt } from './format';
import { budgetNotices, lifetimeNotices, Memory } from './notices';
import { Poller } from './poller';
import { requestJSON } from './request';
import { errorMessage, notify, showNotices } from './show';
import { ILifetime, IStatus } from './types';

const STATUS_INTERVAL_MS = 30_000;

export class StatusItem extends Widget {
  constructor(private readonly memory: Memory) {
    super();
    this.id = 'aifacility-status';
    this.addClass('aifacility-status');
    this.node.title = 'Facility session: click for details';
    this.timeNode = this.part('aifacility-time-left');
    this.acceleratorNode = this.part('aifacility-accelerator');
    this.budgetNode = this.part('aifacility-budget');
    this.timeNode.textContent = '…';
    // A button for the keyboard too: Enter or Space opens the dialog.
    this.node.tabIndex = 0;
    this.node.setAttribute('role', 'button');
    this.node.addEventListener('click', () => void this.openDialog());
    this.node.addEventListener('keydown', event => {
      if (event.key === 'Enter' || event.key === ' ') {
        event.preventDefault();
        void this.openDialog();
      }
    });
    this.poller = new Poller(() => this.fetch(), STATUS_INTERVAL_MS);
    this.poller.start();
    this.ticker = window.setInterval(() => this.tick(), 1000);
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this.poller.stop();
    window.clearInterval(this.ticker);
    super.dispose();
  }

  private part(className: string): HTMLSpanElement {
    const span = document.createElement('span');
    span.className = className;
    this.node.appendChild(span);
    return span;
  }

  private async fetch(): Promise<void> {
    try {
      this.status = await requestJSON<IStatus>('status');
      this.fetchedAt = Date.now();
      this.error = null;
      showNotices(budgetNotices(this.status.budgets ?? [], this.memory));
    } catch (error) {
      // Keep counting down from the last answer; say why it may be stale.
      this.error = errorMessage(error);
    }
    this.render();
  }

  /** Seconds left now, from the last answer; null without a lifetime. */
  private remaining(): number | null {
    const lifetime = this.status?.lifetime;
    return lifetime
      ? remainingAt(lifetime.remaining_seconds, this.fetchedAt, Date.now())
      : null;
  }

  private tick(): void {
    const lifetime = this.status?.lifetime ?? null;
    const remaining = this.remaining();
    if (lifetime !== null && remaining !== null) {
      showNotices(lifetimeNotices(lifetime, remaining, this.memory));
    }
    this.renderTime();
  }

  private renderTime(): void {
    if (this.status === null) {
      this.timeNode.textContent = this.error ? 'facility ?' : '…';
    } else if (!this.status.lifetime && this.status.lifetime_error) {
      // Not "no limit": the limit exists but could not be read.
      this.timeNode.textContent = 'time left unknown';
    } else {
      this.timeNode.textContent = formatTimeLeft(this.remaining());
    }
  }

  private render(): void {
    this.renderTime();
    const status = this.status;
    const accelerator = status?.accelerator ?? null;
    this.acceleratorNode.textContent = accelerator ?? '';
    this.acceleratorNode.hidden = accelerator === null;
    const budget = budgetText(status?.budgets);
    this.budgetNode.textContent = budget;
    this.budgetNode.hidden = budget === '';
    const lines = [
      status?.lifetime?.message ?? status?.lifetime_error ?? null,
      ...(status?.budgets ?? []).map(b => b.message),
      this.error ? `Could not refresh: ${this.error}` : null
    ];
    this.node.title = lines.filter(Boolean).join('\n') || 'Facility session';
    this.toggleClass('aifacility-stale', this.error !== null);
  }

  private async openDialog(): Promise<void> {
    if (this.dialogOpen) {
      return;
    }
    this.dialogOpen = true;
    try {
      await this.runDialog();
    } finally {
      this.dialogOpen = false;
    }
  }

  private async runDialog(): Promise<void> {
    const lifetime = this.status?.lifetime ?? null;
    const body = new SessionBody(this.status, this.error);
    const extendable = lifetime !== null && lifetime.extendable_hours > 0;
    const result = await showDialog<number | null>({
      title: 'Session',
      body,
      buttons: extendable
        ? [Dialog.cancelButton(), Dialog.okButton({ label: 'Extend' })]
        : [Dialog.okButton({ label: 'Close' })]
    });
    if (!extendable || !result.button.accept) {
      return;
    }
    const hours = result.value;
    if (hours === null || !Number.isFinite(hours) || hours <= 0) {
      notify('error', 'Give the hours to extend by, e.g. 1 or 0.25.');
      return;
    }
    try {
      const updated = await requestJSON<ILifetime>('extend', {
        method: 'POST',
        body: JSON.stringify({ hours })
      });
      if (this.status) {
        this.status = { ...this.status, lifetime: updated, lifetime_error: null };
      }
      this.fetchedAt = Date.now();
      this.render();
      // (an idle-culled session still ends when idle: the message says which end applies)
      notify('success', `Extended by ${hours} h. ${updated.message}`);
    } catch (error) {
      notify('error', errorMessage(error));
    }
  }

  private readonly timeNode: HTMLSpanElement;
  private readonly acceleratorNode: HTMLSpanElement;
  private readonly budgetNode: HTMLSpanElement;
  private readonly poller: Poller;
  private readonly ticker: number;
  private status: IStatus | null = null;
  private fetchedAt = 0;
  private error: string | null = null;
  private dialogOpen = false;
}

/** The "Session" dialog's body: the message, and the Extend hours input. */
class SessionBody extends Widget implements Dialog.IBodyWidget<number | null> {
  constructor(status: IStatus | null, error: string | null) {
    super();
    this.addClass('aifacility-session-dialog');
    const lifetime = status?.lifetime ?? null;
    const message = document.createElement('p');
    message.textContent =
      lifetime?.message ??
      status?.lifetime_error ??
      (status ? 'This session has no time limit.' : `The session's state is not known yet${error ? `: ${error}` : '.'}`);
    this.node.appendChild(message);
    if (lifetime && lifetime.extendable_hours > 0) {
      const label = document.createElement('label');
      label.textContent = `Extend by (hours, up to ${lifetime.extendable_hours}) `;
      this.input = document.createElement('input');
      this.input.type = 'number';
      this.input.className = 'aifacility-extend-hours jp-mod-styled';
      this.input.min = '0.25';
      this.input.step = '0.25';
      this.input.max = String(lifetime.extendable_hours);
      this.input.value = String(Math.min(1, lifetime.extendable_hours));
      label.appendChild(this.input);
      this.node.appendChild(label);
    }
  }

  getValue(): number | null {
    if (!this.input || this.input.value.trim() === '') {
      return null;
    }
    return Number(this.input.value);
  }

  private input: HTMLInputElement | null = null;
}
