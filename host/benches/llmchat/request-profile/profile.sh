#!/usr/bin/env bash
# Where one request's time goes (issue 13): profiles a running `llmchat up` with perf under a
# one-connection wrk load and splits the host's CPU per request into phases (classify.py).
#
#   profile.sh PID URL [SECONDS]     e.g. profile.sh "$(pgrep -n llmchat)" http://127.0.0.1:3001/hello
#
# Needs perf (DWARF call graphs: the host has no frame pointers; wasm frames are named
# `wasm[N]::function[M]` from the .cwasm) and wrk. Unset RUST_BACKTRACE for the host.
set -euo pipefail
pid=$1 url=$2 secs=${3:-4}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
perf record -F 999 --call-graph dwarf,32768 -p "$pid" -o "$work/perf.data" -- sleep "$((secs + 1))" >/dev/null 2>&1 &
perf_pid=$!
sleep 0.3
out=$(wrk -t1 -c1 -d"${secs}s" "$url")
wait "$perf_pid" || true
requests=$(awk '/requests in/{print $1}' <<<"$out")
echo "$url: $requests requests, latency avg $(awk '/Latency/{print $2}' <<<"$out")"
# --no-inline: resolving inlined frames through addr2line takes minutes per run.
perf script -i "$work/perf.data" -F comm,tid,ip,sym,dso --no-inline 2>/dev/null | gzip >"$work/script.gz"
python3 "$here/classify.py" "$work/script.gz" "$requests"
