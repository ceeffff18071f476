/**
 * Calls to the server extension under <base_url>/aifacility/ (CONTRACT.md).
 *
 * ServerConnection.makeRequest adds the XSRF token and the server's auth.
 * Every failure becomes an ApiError whose message is the server's sentence
 * ({"message": ...}) or, with no answer at all, a sentence about the network,
 * so that callers only ever show `error.message`.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number
  ) {
    super(message);
  }
}

let settings: ServerConnection.ISettings | null = null;

/** Uses the application's server settings (set once by the plugin). */
export function useSettings(value: ServerConnection.ISettings): void {
  settings = value;
}

function serverSettings(): ServerConnection.ISettings {
  if (settings === null) {
    settings = ServerConnection.makeSettings();
  }
  return settings;
}

async function call(endPoint: string, init: RequestInit): Promise<Response> {
  const s = serverSettings();
  const url = URLExt.join(s.baseUrl, 'aifacility', endPoint);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, s);
  } catch (error) {
    throw new ApiError(
      `The session's server could not be reached (${(error as Error).message}).`,
      0
    );
  }
  if (!response.ok) {
    const body = await response.text();
    let message = `The server answered ${response.status} ${response.statusText}.`;
    try {
      const parsed = JSON.parse(body);
      if (parsed && typeof parsed.message === 'string' && parsed.message) {
        message = parsed.message;
      }
    } catch {
      // Not JSON (a proxy's page): keep the status line.
    }
    throw new ApiError(message, response.status);
  }
  return response;
}

/** A JSON call; null for an empty answer (204). */
export async function requestJSON<T>(
  endPoint: string,
  init: RequestInit = {}
): Promise<T> {
  if (init.body !== undefined) {
    init = {
      ...init,
      headers: { 'Content-Type': 'application/json', ...(init.headers ?? {}) }
    };
  }
  const response = await call(endPoint, init);
  const text = await response.text();
  return (text ? JSON.parse(text) : null) as T;
}

/** A text/plain call (the logs). */
export async function requestText(endPoint: string): Promise<string> {
  const response = await call(endPoint, {});
  return response.text();
}

/** A job name as one path segment. */
export function jobPath(name: string, rest = ''): string {
  return `jobs/${encodeURIComponent(name)}${rest}`;
}
