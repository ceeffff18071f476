/**
 * Shows notices with JupyterLab's own Notification API (its toasts and its
 * notification center).
 *
 * Every call passes `autoClose` explicitly: in JupyterLab 4.6 a
 * notification without it (and without actions) only lands in the
 * notification center, with no toast on screen.
 */
import { Notification } from '@jupyterlab/apputils';

import { INotice, NoticeLevel } from './notices';

/** Shows one notification. */
export function notify(
  level: NoticeLevel,
  message: string,
  autoClose?: number | false
): void {
  // Warnings and errors ask for an action (save, extend, fix the form,
  // look at a failure): they stay until dismissed. Good news goes by itself.
  const urgent = { autoClose: autoClose ?? (false as const) };
  const passing = { autoClose: autoClose ?? 8000 };
  switch (level) {
    case 'error':
      Notification.error(message, urgent);
      break;
    case 'warning':
      Notification.warning(message, urgent);
      break;
    case 'success':
      Notification.success(message, passing);
      break;
    default:
      Notification.info(message, passing);
  }
}

export function showNotices(notices: INotice[]): void {
  for (const notice of notices) {
    notify(notice.level, notice.message);
  }
}

/** The sentence of any error (ApiError's is the server's). */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
