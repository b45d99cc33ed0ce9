// moderation: a queue processor that checks a message against a word list and stores the
// verdict in kv.
//
// Job: {"conversation_id": string, "text": string}. Verdict, under `moderation:{id}`:
// {"conversation_id", "verdict": "flagged" | "clean", "matches": [words], "job_id"}.
// Words match whole and case-insensitively. Storing is idempotent, as at-least-once
// delivery needs.
//
// Config (`[component.moderation.config]`): `blocked_words`, required, a list of words;
// `verdict_ttl_seconds` (default 86400).
// Errors: a malformed job or config is `fail` (retrying cannot fix it); kv `unavailable`
// or `quota-exceeded` is `retry`, kv `invalid` is `fail`.

import * as config from 'llmchat:runtime/config@0.1.0';
import * as kv from 'llmchat:runtime/kv@0.1.0';
import { log } from 'llmchat:runtime/log@0.1.0';
import type { Job } from 'llmchat:runtime/processor@0.1.0';

import { witError } from '../lib/errors.ts';
import { defineProcessor, fail, retry } from '../lib/processor.ts';

const DEFAULT_TTL_SECONDS = 86400;
const WORD = /[\p{L}\p{N}']+/gu;
// Chat's conversation ids (components/conversation-store): they end up in kv keys.
const CONVERSATION_ID = /^[A-Za-z0-9_-]{1,128}$/;

export const processor = defineProcessor((job: Job) => {
  const { conversationId, text } = parseJob(job.payload);
  const blocked = blockedWords();
  const matches = [...new Set(Array.from(text.matchAll(WORD), (m) => m[0].toLowerCase()))].filter((w) => blocked.has(w));
  const verdict = matches.length > 0 ? 'flagged' : 'clean';
  const record = { conversation_id: conversationId, verdict, matches, job_id: job.id };
  try {
    kv.set(`moderation:${conversationId}`, new TextEncoder().encode(JSON.stringify(record)), BigInt(ttlSeconds()) * 1000n);
  } catch (e) {
    const error = witError<kv.Error>(e);
    if (error === undefined) throw e;
    const message = `storing the verdict for ${conversationId}: kv ${error.tag}: ${error.val}`;
    throw error.tag === 'invalid' ? fail(message) : retry(message);
  }
  if (verdict === 'flagged') {
    log('info', `conversation ${conversationId} flagged: ${matches.join(', ')}`);
  }
  return `${verdict} ${conversationId}${matches.length > 0 ? `: ${matches.join(', ')}` : ''}`;
});

function parseJob(payload: string): { conversationId: string; text: string } {
  let job: unknown;
  try {
    job = JSON.parse(payload);
  } catch {
    throw fail('payload is not JSON');
  }
  if (typeof job !== 'object' || job === null || Array.isArray(job)) {
    throw fail('payload must be a JSON object');
  }
  const { conversation_id: conversationId, text } = job as Record<string, unknown>;
  if (typeof conversationId !== 'string' || !CONVERSATION_ID.test(conversationId)) {
    throw fail('`conversation_id` must be 1 to 128 characters of A-Z, a-z, 0-9, `_` or `-`');
  }
  if (typeof text !== 'string') {
    throw fail('`text` must be a string');
  }
  return { conversationId, text };
}

/** `blocked_words`: a list of words, lowercased. */
function blockedWords(): Set<string> {
  const raw = config.get('blocked_words');
  if (raw === undefined) {
    throw fail('config `blocked_words` is not set');
  }
  let words: unknown;
  try {
    words = JSON.parse(raw);
  } catch {
    words = undefined;
  }
  if (!Array.isArray(words) || words.some((w) => typeof w !== 'string')) {
    throw fail('config `blocked_words` must be a list of strings');
  }
  return new Set((words as string[]).map((w) => w.toLowerCase()));
}

function ttlSeconds(): number {
  const raw = config.get('verdict_ttl_seconds');
  const ttl = raw === undefined ? DEFAULT_TTL_SECONDS : Number(raw);
  if (!Number.isInteger(ttl) || ttl <= 0) {
    throw fail(`config \`verdict_ttl_seconds\` must be a positive whole number, not \`${raw}\``);
  }
  return ttl;
}
