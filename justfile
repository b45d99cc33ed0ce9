# llmchat task runner. `just run` serves the default app; `just test` runs every test.

set shell := ["bash", "-euo", "pipefail", "-c"]

components := "components"

# List the recipes.
default:
    @just --list

# Install what building, testing and benchmarking need: the wasm32-wasip2 target, and
# redis-server, chromium, python3-venv, wrk, ab (apache2-utils) and openssl through apt-get. Each
# is checked first, so on a machine that has them all this costs a fraction of a second and
# changes nothing.
deps:
    #!/usr/bin/env bash
    set -euo pipefail
    rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
    missing=()
    command -v redis-server >/dev/null || missing+=(redis-server)
    [[ -n ${LLMCHAT_CHROMIUM:-} ]] || command -v chromium >/dev/null || command -v chromium-browser >/dev/null || missing+=(chromium)
    # Once the Python components' venv exists, its interpreter is what they build with.
    [[ -x {{components}}/python/.venv/bin/python ]] || python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3 python3-venv)
    command -v wrk >/dev/null || missing+=(wrk)
    # The benchmark's non-keep-alive HTTP rows (issue 13) use ab, as the post-mortem did.
    command -v ab >/dev/null || missing+=(apache2-utils)
    # The Redis TLS test makes its CA and certificates with the openssl command.
    command -v openssl >/dev/null || missing+=(openssl)
    if (( ${#missing[@]} )); then
        sudo=()
        if (( EUID != 0 )); then
            if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
                sudo=(sudo -n)
            else
                echo "error: missing ${missing[*]}, and installing them needs root: run \`sudo apt-get install --no-install-recommends ${missing[*]}\`, then this again" >&2
                exit 1
            fi
        fi
        if ! command -v apt-get >/dev/null; then
            echo "error: missing ${missing[*]}, and there is no apt-get here: install them with your package manager" >&2
            exit 1
        fi
        echo "deps: installing ${missing[*]}"
        "${sudo[@]}" apt-get update -qq
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
    command -v node >/dev/null || echo "note: the TypeScript components need Node.js >= 20.19 with npm (https://nodejs.org); Debian's nodejs is too old"

# The old name of `deps`.
alias setup := deps

# Build the guest components: Rust (wasm32-wasip2), TypeScript (jco) and Python
# (componentize-py). The JS and Python builds skip components that have not changed.
build-components: deps build-rust-components build-js build-python

build-rust-components:
    @rustup target list --installed | grep -qx wasm32-wasip2 || { echo "error: the wasm32-wasip2 target is missing; run \`just deps\`" >&2; exit 1; }
    cd {{components}} && cargo build --locked --release --target wasm32-wasip2

# TypeScript components into components/target/js/ (needs Node.js >= 20.19 and npm).
build-js:
    {{components}}/js/build.sh

# Python components into components/target/python/ (needs python3 >= 3.10 with venv).
build-python:
    {{components}}/python/build.sh

# Build the host binary (target/release/llmchat) and the components, and compile the default
# manifest's components into the artifact cache, so that `just run` starts at once.
build: build-components
    cargo build --locked --release --bin llmchat
    ./target/release/llmchat compile -f components/llmchat.toml

# Serve the default manifest on http://127.0.0.1:3001 (embedded kv, echo llm).
run *ARGS: deps build
    ./target/release/llmchat up -f components/llmchat.toml {{ARGS}}

# Run unit and end-to-end tests (host, and the guest components' unit tests natively).
# The guest crates are every member of the components workspace (`--workspace`), so a new
# component's unit tests run with no edit here. Each of them builds for the host target too:
# wit-bindgen's exports and wstd compile natively and are never called by a unit test. A
# crate that could not would gate its wasm-only code on `target_family = "wasm"`.
test: deps build-components
    cargo test --locked --release --workspace
    cd {{components}} && cargo test --locked --lib --workspace --target "$(rustc -vV | sed -n 's/^host: //p')"

# Run the tests whose name contains NAME.
test-one NAME: deps build-components
    cargo test --locked --release --workspace -- {{NAME}}

# Benchmarks: per-invocation cost, HTTP load vs wasmtime serve, RSS, queues vs BullMQ (BullMQ
# runs in the same run, on its own private redis-server; `bench-deps` installs it).
# Prints a markdown table and writes it to target/bench-report.md.
bench: deps build bench-deps
    env -u RUST_BACKTRACE cargo bench --locked -p llmchat-host --bench llmchat

# The queue benchmark's BullMQ side is host/benches/bullmq: `npm ci` runs when its node_modules
# is missing or older than its package-lock.json, which pins every package exactly. Without
# node and npm this only says so, and the bench reports BullMQ as not run.
# Install the npm packages of the benchmark's BullMQ side.
bench-deps:
    #!/usr/bin/env bash
    set -euo pipefail
    dir=host/benches/bullmq
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        echo "note: node and npm are not installed; the bench will report BullMQ as not run (install Node.js >= 20 with npm)" >&2
        exit 0
    fi
    stamp=$dir/node_modules/.package-lock.json
    if [[ ! -f $stamp || $dir/package-lock.json -nt $stamp ]]; then
        echo "bench-deps: npm ci in $dir"
        npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
    fi

# Start a local Redis Cluster for manual use: 6 nodes (3 masters, 3 replicas) on
# 127.0.0.1:7000-7005 (or from LLMCHAT_CLUSTER_PORT), data under target/redis-cluster/. Point
# a manifest at it with `[redis] url = "redis://127.0.0.1:7000"` (the host finds out it is a
# cluster) or REDIS_URL=redis://127.0.0.1:7000,redis://127.0.0.1:7001. `just cluster-stop` ends it.
cluster: deps
    #!/usr/bin/env bash
    set -euo pipefail
    base=${LLMCHAT_CLUSTER_PORT:-7000}
    dir=target/redis-cluster
    mkdir -p "$dir"
    addresses=()
    for port in $(seq "$base" $((base + 5))); do
        addresses+=("127.0.0.1:$port")
        if redis-cli -p "$port" ping >/dev/null 2>&1; then continue; fi
        mkdir -p "$dir/$port"
        redis-server --bind 127.0.0.1 --port "$port" --cluster-enabled yes \
            --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
            --appendonly yes --dir "$dir/$port" --daemonize yes \
            --pidfile "$PWD/$dir/$port/redis.pid" --logfile "$PWD/$dir/$port/redis.log"
    done
    for port in $(seq "$base" $((base + 5))); do
        for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
    done
    if ! redis-cli -p "$base" cluster info | grep -q '^cluster_state:ok'; then
        redis-cli --cluster create "${addresses[@]}" --cluster-replicas 1 --cluster-yes >/dev/null
        for _ in $(seq 100); do
            redis-cli -p "$base" cluster info | grep -q '^cluster_state:ok' && break
            sleep 0.1
        done
    fi
    redis-cli -p "$base" cluster info | grep -q '^cluster_state:ok' || { echo "error: the cluster did not come up; see $dir/*/redis.log" >&2; exit 1; }
    seeds=$(printf 'redis://%s,' "${addresses[@]}")
    echo "Redis Cluster up: 3 masters, 3 replicas on 127.0.0.1:$base-$((base + 5)), data in $dir"
    echo "  REDIS_URL=${seeds%,} just run"
    echo "  stop it with: just cluster-stop"

# Stop the cluster `just cluster` started and remove its data.
cluster-stop:
    #!/usr/bin/env bash
    set -uo pipefail
    base=${LLMCHAT_CLUSTER_PORT:-7000}
    for port in $(seq "$base" $((base + 5))); do
        redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
    done
    rm -rf target/redis-cluster
    echo "Redis Cluster on 127.0.0.1:$base-$((base + 5)) stopped"

# Formatting and clippy for both workspaces.
lint:
    cargo fmt --all --check
    cargo clippy --locked --release --workspace --all-targets -- -D warnings
    cd {{components}} && cargo fmt --all --check
    cd {{components}} && cargo clippy --locked --target wasm32-wasip2 --all-targets -- -D warnings
