// Errors across the component boundary. What the componentize-js bindings do with WIT
// `result`s:
//
// an import returning `result<T, E>` returns T, or throws an error whose `payload` is the E
// variant (`{tag, val}`). An export returning `result<T, E>` returns T; to answer `err`, it
// throws an object with a `payload` property (or a bare `{tag, val}`). Any other thrown
// value, an `Error` included, cannot be converted and traps the instance.

/** The WIT error variant an import threw, or undefined when `e` is some other exception. */
export function witError<E extends { tag: string }>(e: unknown): E | undefined {
  if (typeof e === 'object' && e !== null && 'payload' in e) {
    const payload = (e as { payload: unknown }).payload;
    if (typeof payload === 'object' && payload !== null && 'tag' in payload) {
      return payload as E;
    }
  }
  return undefined;
}

/** An exception carrying a WIT error variant out of an export. */
export class WitError<E extends { tag: string }> extends Error {
  constructor(readonly payload: E) {
    super('val' in payload ? `${payload.tag}: ${String(payload.val)}` : payload.tag);
  }
}

/** A thrown value as text, for logs and error messages. */
export function describe(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
