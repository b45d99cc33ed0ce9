// HTTP helpers for the fetch-event handlers: StarlingMonkey exports a `fetch` event
// listener as `wasi:http/incoming-handler`, one event per instance (the host instantiates
// per request).

import { log } from 'llmchat:runtime/log@0.1.0';

import { describe } from './errors.ts';

/** An error thrown while handling a request, answered with its status and message. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

/**
 * Answers every request with `handle`. A thrown `HttpError` becomes its JSON error, logged
 * as `info` (a rejected request) or `warn` (5xx); any other exception a 500 `internal
 * error`, logged as `warn` with its message.
 */
export function serve(handle: (request: Request) => Response | Promise<Response>): void {
  addEventListener('fetch', (event) => {
    event.respondWith(
      Promise.resolve()
        .then(() => handle(event.request))
        .catch((e: unknown) => {
          if (e instanceof HttpError) {
            log(e.status >= 500 ? 'warn' : 'info', `${e.status}: ${e.message}`);
            return jsonError(e.status, e.message, e.headers);
          }
          log('warn', `uncaught exception: ${describe(e)}`);
          return jsonError(500, 'internal error');
        }),
    );
  });
}

/** A JSON response. */
export function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'content-type': 'application/json', ...headers },
  });
}

/** The project's error shape: `{"error": message}`. */
export function jsonError(status: number, message: string, headers: Record<string, string> = {}): Response {
  return json(status, { error: message }, headers);
}

/** The request body as a JSON object (an empty body is `{}`), or a 400 naming the problem. */
export async function readJsonObject(request: Request): Promise<Record<string, unknown>> {
  const text = await request.text();
  if (text.trim() === '') {
    return {};
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new HttpError(400, `body is not JSON: ${describe(e)}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new HttpError(400, 'body must be a JSON object');
  }
  return value as Record<string, unknown>;
}

// Build time: the helpers every handler's answer goes through run once here, into the
// snapshot, so that no request pays their first run (see `warmUp` in prompts/main.ts).
json(200, { a: [1, 'b', null] });
jsonError(500, 'internal error');
