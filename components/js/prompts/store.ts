// Where prompts live: templates saved through the API in kv, and defaults from the
// manifest's `[component.prompts.config]`.
//
// kv layout (kv cannot list keys, so saved names are kept in an index):
// - `prompt:{name}`: the template, UTF-8;
// - `prompt-index`: a JSON array of the saved names. Written after the template, and only
//   when a name is new. Two first saves racing may drop one name from the index (kv has no
//   compare-and-set); the template is still there and runs, and saving it again lists it.

import * as config from 'llmchat:runtime/config@0.1.0';
import * as kv from 'llmchat:runtime/kv@0.1.0';

import { witError } from '../lib/errors.ts';
import { HttpError } from '../lib/http.ts';

export interface Prompt {
  name: string;
  template: string;
  source: 'config' | 'saved';
}

const DEFAULT_MAX_PROMPTS = 100;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Every prompt, saved ones replacing defaults of the same name, sorted by name. */
export function listPrompts(): Prompt[] {
  const configured = defaults();
  const saved: Prompt[] = [];
  for (const name of savedNames()) {
    const template = readText(`prompt:${name}`);
    if (template !== undefined) {
      saved.push({ name, template, source: 'saved' });
    }
  }
  return mergePrompts(configured, saved);
}

/** The defaults and the saved prompts, saved ones replacing defaults of the same name, sorted. */
export function mergePrompts(defaults: Record<string, string>, saved: Prompt[]): Prompt[] {
  const prompts = new Map<string, Prompt>(
    Object.entries(defaults).map(([name, template]) => [name, { name, template, source: 'config' }]),
  );
  for (const prompt of saved) {
    prompts.set(prompt.name, prompt);
  }
  return [...prompts.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** The prompt called `name`, saved or default, if any. */
export function findPrompt(name: string): Prompt | undefined {
  const saved = readText(`prompt:${name}`);
  if (saved !== undefined) {
    return { name, template: saved, source: 'saved' };
  }
  const template = defaults()[name];
  return template === undefined ? undefined : { name, template, source: 'config' };
}

/** Saves (or replaces) a prompt; a 409 when it is new and `max_prompts` are saved already. */
export function savePrompt(name: string, template: string): void {
  const names = savedNames();
  const isNew = !names.includes(name);
  const max = maxPrompts();
  if (isNew && names.length >= max) {
    throw new HttpError(409, `at most ${max} prompts can be saved`);
  }
  kvCall(() => kv.set(`prompt:${name}`, encoder.encode(template), undefined));
  if (isNew) {
    kvCall(() => kv.set('prompt-index', encoder.encode(JSON.stringify([...names, name])), undefined));
  }
}

function savedNames(): string[] {
  const raw = readText('prompt-index');
  return raw === undefined ? [] : (JSON.parse(raw) as string[]);
}

/** The `prompts` config: a JSON object of name → template; a 500 naming the key if malformed. */
function defaults(): Record<string, string> {
  return parseDefaults(config.get('prompts'));
}

/** `defaults` without the config call, so that it can run at build time (see main.ts). */
export function parseDefaults(raw: string | undefined): Record<string, string> {
  if (raw === undefined) {
    return {};
  }
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    value = undefined;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value) || Object.values(value).some((t) => typeof t !== 'string')) {
    throw new HttpError(500, 'config `prompts` must be a table of prompt name = template string');
  }
  return value as Record<string, string>;
}

function maxPrompts(): number {
  const raw = config.get('max_prompts');
  const max = raw === undefined ? DEFAULT_MAX_PROMPTS : Number(raw);
  if (!Number.isInteger(max) || max < 0) {
    throw new HttpError(500, `config \`max_prompts\` must be a whole number, not \`${raw}\``);
  }
  return max;
}

function readText(key: string): string | undefined {
  const value = kvCall(() => kv.get(key));
  return value === undefined ? undefined : decoder.decode(value);
}

/** Runs a kv call, turning its error into the HTTP answer: 503, 507 or 500. */
function kvCall<T>(call: () => T): T {
  try {
    return call();
  } catch (e) {
    const error = witError<kv.Error>(e);
    switch (error?.tag) {
      case 'unavailable':
        throw new HttpError(503, `kv unavailable: ${error.val}`, { 'retry-after': '1' });
      case 'quota-exceeded':
        throw new HttpError(507, `kv quota exceeded: ${error.val}`);
      case 'invalid':
        throw new HttpError(500, `kv refused the request: ${error.val}`);
      default:
        throw e;
    }
  }
}
