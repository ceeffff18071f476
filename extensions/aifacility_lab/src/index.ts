/**
 * aifacility-lab: the facility inside JupyterLab.
 *
 * - a status-bar item with the session's time left, accelerator and budget;
 * - a left sidebar with the person's facility jobs and Dask clusters;
 * - job logs in the main area;
 * - notifications (lifetime, job transitions, budgets) with JupyterLab's
 *   Notification API.
 *
 * Everything talks to the server extension's REST API (CONTRACT.md).
 */
import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { MainAreaWidget } from '@jupyterlab/apputils';
import { PageConfig } from '@jupyterlab/coreutils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { IStatusBar } from '@jupyterlab/statusbar';

import { createLogsWidget, LogsView } from './logs';
import { IStorageLike, Memory } from './notices';
import { ICurrentNotebook, JobsPanel } from './panel';
import { useSettings } from './request';
import { StatusItem } from './status';

/** localStorage, or null where the browser refuses it. */
function browserStorage(): IStorageLike | null {
  try {
    return window.localStorage;
  } catch {
    return null;
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'aifacility-lab:plugin',
  description: 'Session time, facility jobs, Dask clusters and budgets.',
  autoStart: true,
  optional: [IStatusBar, INotebookTracker],
  activate: (
    app: JupyterFrontEnd,
    statusBar: IStatusBar | null,
    notebooks: INotebookTracker | null
  ) => {
    useSettings(app.serviceManager.serverSettings);
    // One memory per user server: on a JupyterHub all users share the origin.
    const memory = new Memory(browserStorage(), `aifacility:${PageConfig.getBaseUrl()}:`);

    // The countdown and its warnings run even where there is no status bar.
    const status = new StatusItem(memory);
    if (statusBar) {
      statusBar.registerStatusItem('aifacility:status', {
        item: status,
        align: 'left',
        rank: 50
      });
    }

    const logs = new Map<string, MainAreaWidget<LogsView>>();
    const openLogs = (jobName: string): void => {
      let widget = logs.get(jobName);
      if (!widget || widget.isDisposed) {
        widget = createLogsWidget(jobName);
        logs.set(jobName, widget);
        widget.disposed.connect(() => logs.delete(jobName));
        app.shell.add(widget, 'main');
      }
      app.shell.activateById(widget.id);
    };

    const currentNotebook = (): ICurrentNotebook | null => {
      const panel = notebooks?.currentWidget;
      if (!panel) {
        return null;
      }
      const context = panel.context;
      return {
        // The contents API's path without a drive prefix (e.g. "RTC:").
        path: app.serviceManager.contents.localPath(context.path),
        saveIfDirty: async () => {
          if (context.model.dirty) {
            await context.save();
          }
        }
      };
    };

    const panel = new JobsPanel(memory, {
      currentNotebook,
      openLogs,
      openFile: path => void app.commands.execute('docmanager:open', { path })
    });
    app.shell.add(panel, 'left', { rank: 300 });

    app.commands.addCommand('aifacility:refresh-jobs', {
      label: 'Refresh facility jobs',
      execute: () => panel.refresh()
    });
  }
};

export default plugin;
