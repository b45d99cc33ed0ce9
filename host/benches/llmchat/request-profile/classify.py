"""Splits a `perf script` of the llmchat host into the phases of a request (issue 13).

Usage: classify.py PERF_SCRIPT.gz REQUESTS  (profile.sh runs it). Each sample's whole stack
is checked against the phases below in order and counted for the first that matches, so a
host call made from wasm counts as a host call, not guest code, and funcref setup during
instantiation as instantiation. Prints host CPU µs per request for each phase (samples at
999 Hz, `perf record -F 999`). Kernel frames count for the user frame that entered the
kernel: on loopback, "response write" includes the receiving side's TCP work.
"""

import collections
import gzip
import os
import re
import sys

path, nreq = sys.argv[1], int(sys.argv[2])
RULES = [
 ('instantiate (Store::new + instantiate)', r'Instantiator|::instantiate|InstancePre|Store<T>>::new|Store<T>::new|wasmtime::runtime::store::Store.*::new|allocate_component|WasiCtxBuilder'),
 ('drop (store, instance, memory back to pool)', r'drop_in_place<wasmtime::runtime::store|StoreInner<T> as core::ops::drop|deallocate|Store<T> as core::ops::drop::Drop|decommit|drop_in_place<llmchat_host::runtime|malloc_trim'),
 ('host calls: llmchat capabilities', r'llmchat_host::capabilities::|llmchat_host::kv::|llmchat_host::llm::'),
 ('host calls: wasi (http types, body stream, clocks, io)', r'wasmtime_wasi_http::p2::types_impl|wasmtime_wasi_http::p2::http_impl|wasmtime_wasi::|wasmtime_wasi_io::|wasmtime_wasi_http::p2::bindings|wasmtime_wasi_http::p2::body'),
 ('host calls: lift/lower, call hooks', r'HostFn::entrypoint|HostFn::cabi_entrypoint|component-trampolines|LowerContext|LiftContext|call_hook|resource_drop_trampoline'),
 ('wasmtime under the guest (lazy funcref/table init, libcalls)', r'libcalls|get_table_with_lazy_init|initialize_and_return_funcref|wasmtime_builtin_'),
 ('guest code (wasm)', r'wasm\[\d+\]::|array_to_wasm|module_start'),
 ('response write (hyper, socket)', r'poll_write|poll_flush|h1::role::Server.*encode|writev|Encoder|__libc_write|send'),
 ('accept + parse (hyper, socket)', r'read_head|h1::role::Server.*parse|poll_read|accept|hyper::server|recv'),
 ('routing, trigger, call setup (axum, llmchat http, wasi-http glue)', r'axum::|tower::|llmchat_host::|wasmtime_wasi_http|wasmtime::runtime'),
 ('tokio runtime: park, epoll, wake', r'tokio::runtime|epoll|futex'),
]
RULES = [(p, re.compile(r)) for p, r in RULES]
tot = collections.Counter(); n = 0; other = collections.Counter()
def flush(frames, comm):
    global n
    if not frames: return
    n += 1
    for p, r in RULES:
        if any(r.search(f) for f in frames):
            tot[p] += 1; return
    tot['other'] += 1; other[(comm, frames[0][:80])] += 1
frames=[]; comm=''
for line in gzip.open(path, 'rt', errors='replace'):
    if not line.strip():
        flush(frames, comm); frames=[]; continue
    if not line.startswith(('\t',' ')):
        comm = line.split()[0]; continue
    parts = line.strip().split(' ', 1)
    if len(parts) == 2: frames.append(parts[1])
flush(frames, comm)
ms = 1000/999
print(f'TOTAL {n*ms/nreq*1000:.1f}')
for p,_ in RULES+[('other',None)]:
    print(f'{p}\t{tot[p]*ms/nreq*1000:.1f}')
if os.environ.get('OTHER'):
    for k,c in other.most_common(10): print('  ',c,k)
