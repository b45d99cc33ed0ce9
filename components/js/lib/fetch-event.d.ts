// StarlingMonkey's global scope is a service worker's: a component answers HTTP requests by
// listening for `fetch` events. TypeScript's `webworker` lib types `addEventListener` for a
// plain worker, which has no `fetch` event; this overload adds it.
declare function addEventListener(type: 'fetch', listener: (event: FetchEvent) => void): void;
