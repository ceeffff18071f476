/**
 * The "Submit <path> as a job" dialog's form.
 *
 * The form only collects strings by field name; jobrequest.ts turns them
 * into a JobRequest (and refuses bad ones), so the rules stay testable.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { ISubmitForm } from './jobrequest';
import { IOptions } from './types';

type Choice = [value: string, label: string];

class SubmitForm extends Widget implements Dialog.IBodyWidget<ISubmitForm> {
  constructor(options: IOptions, initial: Partial<ISubmitForm>) {
    super({ node: document.createElement('form') });
    this.addClass('aifacility-submit-form');
    // Enter in a text field must not submit the <form> (a page load).
    this.node.addEventListener('submit', event => event.preventDefault());

    this.select('group', 'Group', [
      ['', 'default'],
      ...options.groups.map((g): Choice => [g, g])
    ]);
    this.input('cpu', 'CPU', 'text', 'e.g. 2');
    this.input('memory', 'Memory', 'text', 'e.g. 4Gi');
    this.select('accelerator', 'Accelerator', [
      ['', 'none'],
      ...options.accelerators.map((a): Choice => [`${a.kind}:${a.name}`, a.label])
    ]);
    const count = this.input('count', 'Count', 'number', '');
    count.min = '1';
    count.step = '1';
    count.value = '1';
    this.select('offload', 'Run on', [
      ['', 'run locally'],
      ...options.offload.map((o): Choice => [o, o])
    ]);
    const hours = this.input('hours', 'Hours', 'number', 'optional');
    hours.min = '0.25';
    hours.step = '0.25';
    this.textarea('parameters', 'Parameters', '{"alpha": 0.5}  (JSON object, optional)');

    // Values from the previous try (e.g. after refused parameters).
    for (const [name, value] of Object.entries(initial)) {
      const field = this.fields.get(name);
      if (field && value !== undefined) {
        field.value = value;
      }
    }
  }

  getValue(): ISubmitForm {
    const value = (name: keyof ISubmitForm) => this.fields.get(name)?.value ?? '';
    return {
      group: value('group'),
      cpu: value('cpu'),
      memory: value('memory'),
      accelerator: value('accelerator'),
      count: value('count'),
      offload: value('offload'),
      hours: value('hours'),
      parameters: value('parameters')
    };
  }

  private row(label: string, control: HTMLElement & { name: string }): void {
    const row = document.createElement('label');
    row.className = 'aifacility-form-row';
    const text = document.createElement('span');
    text.textContent = label;
    row.append(text, control);
    this.node.appendChild(row);
    this.fields.set(control.name, control as unknown as Field);
  }

  private input(name: string, label: string, type: string, placeholder: string): HTMLInputElement {
    const input = document.createElement('input');
    input.name = name;
    input.type = type;
    input.placeholder = placeholder;
    input.className = 'jp-mod-styled';
    this.row(label, input);
    return input;
  }

  private select(name: string, label: string, choices: Choice[]): void {
    const select = document.createElement('select');
    select.name = name;
    select.className = 'jp-mod-styled';
    for (const [value, text] of choices) {
      select.appendChild(new Option(text, value));
    }
    this.row(label, select);
  }

  private textarea(name: string, label: string, placeholder: string): void {
    const area = document.createElement('textarea');
    area.name = name;
    area.rows = 3;
    area.placeholder = placeholder;
    area.className = 'jp-mod-styled';
    this.row(label, area);
  }

  private readonly fields = new Map<string, Field>();
}

type Field = { value: string };

/** Shows the form; the values when "Submit" was chosen, else null. */
export async function askJobForm(
  path: string,
  options: IOptions,
  initial: Partial<ISubmitForm>
): Promise<ISubmitForm | null> {
  const result = await showDialog<ISubmitForm>({
    title: `Submit ${path} as a job`,
    body: new SubmitForm(options, initial),
    buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Submit' })],
    focusNodeSelector: 'select[name="group"]'
  });
  return result.button.accept ? result.value : null;
}
