// js-hello: the smallest JS HTTP handler, for benchmarks against the Rust `hello`.

addEventListener('fetch', (event) => {
  event.respondWith(new Response('Hello, world!\n', { headers: { 'content-type': 'text/plain' } }));
});
