// prompts: saved prompt templates, and completions of them streamed as Server-Sent Events.
//
//   GET  /api/prompts             {"prompts": [{name, template, variables, source}]}
//   POST /api/prompts             {name, template} → 201 the saved prompt
//   POST /api/prompts/{name}/run  {vars?} → text/event-stream: `data: {"delta"}` per piece,
//                                 then `event: done` {"usage": {prompt_tokens, completion_tokens}
//                                 or null}, or `event: error` {"error"}
//
// Config (`[component.prompts.config]`): `prompts`, a table of default name = template;
// `max_prompts` (default 100) saved names; `model`, the llm model (the provider's default
// when unset).

import * as config from 'llmchat:runtime/config@0.1.0';
import * as llm from 'llmchat:runtime/llm@0.1.0';
import { log } from 'llmchat:runtime/log@0.1.0';

import { describe, witError } from '../lib/errors.ts';
import { HttpError, json, readJsonObject, serve } from '../lib/http.ts';
import { findPrompt, listPrompts, mergePrompts, parseDefaults, savePrompt, type Prompt } from './store.ts';
import { fill, variables } from './template.ts';

const NAME = /^[A-Za-z0-9_-]{1,64}$/;
const MAX_TEMPLATE_CHARS = 16 * 1024;
const RUN_PATH = /^\/api\/prompts\/([^/]+)\/run$/;
const TRAILING_SLASHES = /\/+$/;

serve(async (request) => {
  const path = new URL(request.url).pathname.replace(TRAILING_SLASHES, '');
  if (path === '/api/prompts') {
    if (request.method === 'GET') {
      return json(200, { prompts: listPrompts().map(describePrompt) });
    }
    if (request.method === 'POST') {
      return save(await readJsonObject(request));
    }
    throw new HttpError(405, `method ${request.method} not allowed`, { allow: 'GET, POST' });
  }
  const run = RUN_PATH.exec(path);
  if (run !== null) {
    if (request.method !== 'POST') {
      throw new HttpError(405, `method ${request.method} not allowed`, { allow: 'POST' });
    }
    // Names need no percent-encoding: a segment that is not a plain name is no prompt.
    return runPrompt(run[1], await readJsonObject(request));
  }
  throw new HttpError(404, `no such path: ${path}`);
});

// Build time: module-level code runs once, into the snapshot every instance starts from.
// Code an instance runs for the first time pays one-time costs (SpiderMonkey compiles
// functions lazily, and a regex on its first use), and every instance starts from the
// snapshot: without this, every GET paid them again (URL, sort, the placeholder regex: about
// 0.6 ms of 3.5 ms of guest time on the shared 2-core machine, issue 13). So sample data goes
// through the code a request runs, all but the imports: config, kv and log cannot be called
// at build time ("You cannot call arbitrary imported functions during Wizer initialization").
warmUp();

function warmUp() {
  const sample = parseDefaults('{"a": "{{x}} to {{ y }}", "b": "{{x}}"}');
  const prompts = mergePrompts(sample, [{ name: 'a', template: '{{z}}', source: 'saved' }]);
  json(200, { prompts: prompts.map(describePrompt) });
  new URL('http://localhost/api/prompts/a/run/?q=1').pathname.replace(TRAILING_SLASHES, '');
  RUN_PATH.exec('/api/prompts/a/run');
  NAME.test('a');
  fill('{{x}} {{y}}', readVars({ x: 'x', y: 1 }));
}

function describePrompt(prompt: Prompt) {
  return { ...prompt, variables: variables(prompt.template) };
}

function save(body: Record<string, unknown>): Response {
  const { name, template } = body;
  if (typeof name !== 'string' || !NAME.test(name)) {
    throw new HttpError(400, '`name` must be 1 to 64 characters of A-Z, a-z, 0-9, `-` or `_`');
  }
  if (typeof template !== 'string' || template.trim() === '') {
    throw new HttpError(400, '`template` must be a non-empty string');
  }
  if (template.length > MAX_TEMPLATE_CHARS) {
    throw new HttpError(400, `\`template\` must be at most ${MAX_TEMPLATE_CHARS} characters`);
  }
  savePrompt(name, template);
  log('info', `saved prompt \`${name}\``);
  return json(201, describePrompt({ name, template, source: 'saved' }));
}

function runPrompt(name: string, body: Record<string, unknown>): Response {
  const prompt = NAME.test(name) ? findPrompt(name) : undefined;
  if (prompt === undefined) {
    throw new HttpError(404, `unknown prompt \`${name}\``);
  }
  const filled = fill(prompt.template, readVars(body.vars));
  if ('missing' in filled) {
    throw new HttpError(400, `\`vars\` lacks ${filled.missing.map((v) => `\`${v}\``).join(', ')}`);
  }
  let stream: llm.CompletionStream;
  try {
    stream = llm.completeStreaming({
      model: config.get('model'),
      messages: [{ role: 'user', content: filled.text }],
      maxTokens: undefined,
      temperature: undefined,
    });
  } catch (e) {
    throw llmFailure(e);
  }
  log('info', `running prompt \`${name}\``);
  return new Response(eventStream(stream), {
    headers: { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' },
  });
}

/** `vars`: absent, or an object of strings, numbers or booleans; a 400 naming the bad one. */
function readVars(vars: unknown): Record<string, string> {
  if (vars === undefined) {
    return {};
  }
  if (typeof vars !== 'object' || vars === null || Array.isArray(vars)) {
    throw new HttpError(400, '`vars` must be an object');
  }
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(vars)) {
    if (typeof value !== 'string' && typeof value !== 'number' && typeof value !== 'boolean') {
      throw new HttpError(400, `\`vars.${key}\` must be a string, number or boolean`);
    }
    out[key] = String(value);
  }
  return out;
}

/** One SSE event per llm piece, pulled as the client reads; then `done`, or `error`. */
function eventStream(stream: llm.CompletionStream): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  const event = (name: string | undefined, data: unknown) =>
    encoder.encode(`${name === undefined ? '' : `event: ${name}\n`}data: ${JSON.stringify(data)}\n\n`);
  return new ReadableStream({
    pull(controller) {
      try {
        const delta = stream.next();
        if (delta !== undefined) {
          controller.enqueue(event(undefined, { delta }));
          return;
        }
        const usage = stream.usage();
        controller.enqueue(
          event('done', {
            // snake_case, as chat's API answers it.
            usage: usage === undefined ? null : { prompt_tokens: usage.promptTokens, completion_tokens: usage.completionTokens },
          }),
        );
      } catch (e) {
        const message = llmFailure(e).message;
        log('warn', `stream broke: ${message}`);
        controller.enqueue(event('error', { error: message }));
      }
      controller.close();
    },
  });
}

/** An llm error as the HTTP answer: 504 on a timeout, 502 otherwise. */
function llmFailure(e: unknown): HttpError {
  const error = witError<llm.Error>(e);
  switch (error?.tag) {
    case 'invalid-request':
      return new HttpError(502, `the llm refused the request: ${error.val}`);
    case 'provider':
      return new HttpError(502, `the llm provider answered ${error.val.status}: ${error.val.message}`);
    case 'unavailable':
      return new HttpError(502, `the llm provider is unavailable: ${error.val}`);
    case 'timeout':
      return new HttpError(504, 'the llm provider timed out');
    default:
      return new HttpError(500, `llm call failed: ${describe(e)}`);
  }
}

