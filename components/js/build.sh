#!/usr/bin/env bash
# Builds the TypeScript components into components/target/js/<name>.wasm with
# `jco componentize` (StarlingMonkey). Usage: build.sh [NAME...] (every component when none).
#
# Incremental: `npm ci` runs only when node_modules is missing or older than the lockfile,
# and a component is rebuilt only when one of its inputs is newer than its .wasm (its folder,
# lib/, the WIT, the npm lockfile, tsconfig.json, bundle.config.js, this script). Builds
# run in parallel, one per core (JS_BUILD_JOBS=N to change). After the first `npm ci`
# nothing here needs the network.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
wit_src=$here/../../wit          # llmchat:runtime, the host's contract: copied, never edited
out=$(cd "$here/.." && pwd)/target/js
gen=$here/generated              # gitignored: the assembled WIT and the TS types from it
engine=$here/node_modules/@bytecodealliance/componentize-js/lib/starlingmonkey_embedding.wasm
wasi_version=0.2.10              # the engine's WASI, and so wit/deps/ (see wit/js.wit)

# name, entry module, world of wit/js.wit. Every component is built with `--disable http`: it
# removes `fetch()` and with it the `wasi:http/outgoing-handler` import, which the host
# refuses without `allowed_outbound_hosts`; the `fetch` event (incoming requests) stays.
components=(
  "prompts         prompts/main.ts              http-handler"
  "moderation      moderation/main.ts           queue-processor"
  "js-hello        hello/main.ts                http-handler"
  "js-counter      fixtures/counter/main.ts     http-handler"
  "js-memory-bomb  fixtures/memory-bomb/main.ts http-handler"
  "js-loop         fixtures/loop/main.ts        http-handler"
  "js-host-flood   fixtures/host-flood/main.ts  http-handler"
  "js-fail         fixtures/fail/main.ts        queue-processor"
)

die() {
  echo "error: $*" >&2
  exit 1
}

# version_at_least HAVE WANT: true when dotted version HAVE >= WANT.
version_at_least() {
  [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]
}

check_tools() {
  command -v node >/dev/null || die "node is not installed; the JS components need Node.js >= 20.19 (e.g. \`apt-get install nodejs npm\`)"
  command -v npm >/dev/null || die "npm is not installed; the JS components need npm >= 8.3 (e.g. \`apt-get install npm\`)"
  local node_version npm_version
  node_version=$(node --version | sed 's/^v//')
  npm_version=$(npm --version)
  version_at_least "$node_version" 20.19.0 || die "node $node_version is too old; the JS components need >= 20.19 (rolldown, jco)"
  version_at_least "$npm_version" 8.3.0 || die "npm $npm_version is too old; the JS components need >= 8.3 (package.json \`overrides\`)"
}

install_deps() {
  local stamp=$here/node_modules/.package-lock.json
  if [ ! -f "$stamp" ] || [ "$here/package-lock.json" -nt "$stamp" ] || [ "$here/package.json" -nt "$stamp" ]; then
    echo "js: npm ci"
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
  fi
  # wit/deps/ holds the engine's WASI; a jco/componentize-js upgrade may bring another one.
  local found
  found=$(grep -a -o 'wasi:http/types@[0-9.]*' "$engine" | sort -u)
  [ "$found" = "wasi:http/types@$wasi_version" ] || die "the StarlingMonkey engine imports ${found:-no wasi:http}, not @$wasi_version: re-extract wit/deps with \`wasm-tools component wit $engine --out-dir DIR\` (keep the wasi packages) and update \`wasi_version\` in build.sh"
}

# replace_if_changed NEW DEST: moves folder NEW to DEST unless they are identical, so that
# DEST keeps its mtimes (and the components their up-to-date state) when nothing changed.
replace_if_changed() {
  if [ -d "$2" ] && diff -rq "$1" "$2" >/dev/null; then
    rm -rf "$1"
    return 1
  fi
  rm -rf "$2"
  mv "$1" "$2"
}

# generated/wit: wit/js.wit and the engine's WASI (wit/deps), plus llmchat:runtime from the
# top-level wit/ as deps/llmchat-runtime, without its world file (its worlds need WASI
# 0.2.12). Then generated/types: the TypeScript declarations of every world's imports and
# exports.
assemble_wit() {
  local staging=$gen/wit.new
  rm -rf "$staging"
  mkdir -p "$staging/deps/llmchat-runtime"
  cp "$here/wit/js.wit" "$staging/"
  cp "$here"/wit/deps/*.wit "$staging/deps/"
  local file
  for file in "$wit_src"/*.wit; do
    grep -q '^world ' "$file" || cp "$file" "$staging/deps/llmchat-runtime/"
  done
  if replace_if_changed "$staging" "$gen/wit" || [ ! -d "$gen/types" ]; then
    echo "js: generating TypeScript types from the WIT"
    rm -rf "$gen/types"
    local world
    for world in http-handler queue-processor monitor; do
      "$here/node_modules/.bin/jco" guest-types "$gen/wit" --world-name "$world" --out-dir "$gen/types" --quiet
    done
  fi
}

# needs_build NAME ENTRY: true when the .wasm is missing or older than any of its inputs.
needs_build() {
  local wasm=$out/$1.wasm
  [ -f "$wasm" ] || return 0
  [ -n "$(find "$here/$(dirname "$2")" "$here/lib" "$gen/wit" "$here/package-lock.json" \
    "$here/tsconfig.json" "$here/bundle.config.js" "$here/build.sh" -newer "$wasm" -print -quit)" ]
}

build_one() {
  local name=$1 entry=$2 world=$3
  local started=$SECONDS
  echo "js: building $name ($entry, world $world)"
  rm -f "$out/$name.wasm.tmp"
  if ! (cd "$here" && node_modules/.bin/jco componentize "$entry" \
    --wit "$gen/wit" --world-name "$world" --disable http \
    --bundle-config bundle.config.js --out "$out/$name.wasm.tmp" >/dev/null); then
    rm -f "$out/$name.wasm.tmp"
    die "building $name failed"
  fi
  mv "$out/$name.wasm.tmp" "$out/$name.wasm"
  echo "js: built $out/$name.wasm ($(($(stat -c %s "$out/$name.wasm") / 1024)) KiB, $((SECONDS - started)) s)"
}

main() {
  check_tools
  mkdir -p "$out" "$gen"
  # One build at a time: a second one waits (both write generated/ and target/js).
  exec 9>"$gen/.lock"
  flock 9
  install_deps
  assemble_wit

  local wanted=("$@") todo=() line name entry world
  for name in "${wanted[@]}"; do
    printf '%s\n' "${components[@]}" | grep -q "^$name " || die "unknown component \`$name\`"
  done
  for line in "${components[@]}"; do
    read -r name entry world <<<"$line"
    if [ ${#wanted[@]} -gt 0 ] && [[ " ${wanted[*]} " != *" $name "* ]]; then
      continue
    fi
    if needs_build "$name" "$entry"; then
      todo+=("$line")
    fi
  done
  if [ ${#todo[@]} -eq 0 ]; then
    echo "js: every component is up to date"
    return
  fi

  echo "js: type-checking"
  (cd "$here" && node_modules/.bin/tsc --noEmit -p .) || die "type errors (see above)"
  # A build is single-threaded: run one per core (about 800 MB of memory each).
  local jobs=${JS_BUILD_JOBS:-$(nproc)} pids=() failed=0 pid
  for line in "${todo[@]}"; do
    if [ ${#pids[@]} -ge "$jobs" ]; then
      wait "${pids[0]}" || failed=1
      pids=("${pids[@]:1}")
    fi
    # shellcheck disable=SC2086 # one line = three words
    build_one $line &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do
    wait "$pid" || failed=1
  done
  [ "$failed" -eq 0 ] || die "some components failed to build (see above)"
}

main "$@"
