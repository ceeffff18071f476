/**
 * From the submit form's values to a JobRequest (CONTRACT.md).
 *
 * Pure, so the rules (empty fields left out, parameters must be a JSON
 * object, numbers must make sense) are unit-tested without a browser. A
 * refusal carries a sentence for Notification.error instead of a request.
 */
import { IJobRequest } from './types';

/** The form's fields, by their `name` attribute, as the inputs hold them. */
export interface ISubmitForm {
  group: string;
  cpu: string;
  memory: string;
  /** "kind:name" of an entry of options.accelerators, or '' for none. */
  accelerator: string;
  count: string;
  offload: string;
  hours: string;
  parameters: string;
}

export type BuildResult =
  | { ok: true; request: IJobRequest }
  | { ok: false; error: string };

function refuse(error: string): BuildResult {
  return { ok: false, error };
}

export function buildJobRequest(
  notebook: string,
  form: Partial<ISubmitForm>
): BuildResult {
  const field = (key: keyof ISubmitForm): string => (form[key] ?? '').trim();

  if (!notebook.trim()) {
    return refuse('There is no notebook to submit.');
  }
  const request: IJobRequest = { notebook };

  const parametersText = field('parameters');
  if (parametersText) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(parametersText);
    } catch (e) {
      return refuse(
        `The parameters must be a JSON object such as {"alpha": 0.5}: ${(e as Error).message}.`
      );
    }
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
      return refuse(
        'The parameters must be a JSON object such as {"alpha": 0.5}.'
      );
    }
    // An empty object asks for nothing: leave it out like the other fields.
    if (Object.keys(parsed as object).length > 0) {
      request.parameters = parsed as { [key: string]: unknown };
    }
  }

  for (const key of ['group', 'cpu', 'memory'] as const) {
    const value = field(key);
    if (value) {
      request[key] = value;
    }
  }

  const accelerator = field('accelerator');
  if (accelerator) {
    const colon = accelerator.indexOf(':');
    if (colon <= 0 || colon === accelerator.length - 1) {
      return refuse(`"${accelerator}" is not an accelerator of the form kind:name.`);
    }
    const countText = field('count') || '1';
    const count = Number(countText);
    if (!Number.isInteger(count) || count < 1) {
      return refuse(`The accelerator count must be a whole number from 1, not "${countText}".`);
    }
    request.accelerator = {
      kind: accelerator.slice(0, colon),
      name: accelerator.slice(colon + 1),
      count
    };
  }

  const offload = field('offload');
  if (offload) {
    request.offload = offload;
  }

  const hoursText = field('hours');
  if (hoursText) {
    const hours = Number(hoursText);
    if (!Number.isFinite(hours) || hours <= 0) {
      return refuse(`The hours must be a positive number, not "${hoursText}".`);
    }
    request.hours = hours;
  }

  return { ok: true, request };
}
