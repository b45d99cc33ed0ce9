// Queue processors: `defineProcessor(handle)` builds the `llmchat:runtime/processor` export.

import type { Job, JobError } from 'llmchat:runtime/processor@0.1.0';

import { describe, WitError } from './errors.ts';

/** A transient failure: the job is retried after the queue's backoff. Throw it. */
export function retry(message: string): WitError<JobError> {
  return new WitError({ tag: 'retry', val: message });
}

/** A permanent failure: the job is dead-lettered at once. Throw it. */
export function fail(message: string): WitError<JobError> {
  return new WitError({ tag: 'fail', val: message });
}

/**
 * The `processor` export for `handle`, which returns a note for the log or throws
 * `retry(..)` / `fail(..)`. Any other exception becomes a `retry` naming it, as a trap
 * would be retried, but with its message kept instead of an `unreachable` trap.
 */
export function defineProcessor(handle: (job: Job) => string): { process(job: Job): string } {
  return {
    process(job: Job): string {
      try {
        return handle(job);
      } catch (e) {
        if (e instanceof WitError) throw e;
        throw retry(`uncaught exception: ${describe(e)}`);
      }
    },
  };
}
