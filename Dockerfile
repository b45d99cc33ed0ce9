# syntax=docker/dockerfile:1.7
# The llmchat image: the `llmchat` binary and the default app (components/llmchat.toml with
# its Rust, TypeScript and Python components), compiled into the artifact cache at build
# time so that `llmchat up` maps the artifacts and starts in under a second.
#
#   docker build -t llmchat .
#   docker run --rm -p 3001:8080 llmchat
#
# Four build stages, each on the official image of its toolchain: `rust` (the host binary
# and the Rust components), `js` (the TypeScript components: jco needs Node.js >= 20.19) and
# `python` (the Python component: componentize-py from PyPI), then a small `runtime` stage on
# debian-slim. The base images are build arguments, so a registry mirror can stand in:
#
#   docker build --build-arg RUST_IMAGE=mirror.example/rust:1.95-slim-bookworm ... .
#
# The runtime stage runs as uid/gid 10001, listens on 0.0.0.0:8080, and keeps the artifact
# cache and the state folder (deployments) in the two VOLUMEs below. See the README,
# "Running in production" > "Container image".

ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm
ARG NODE_IMAGE=docker.io/library/node:22-bookworm-slim
ARG PYTHON_IMAGE=docker.io/library/python:3.12-slim-bookworm
ARG RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim

# ---- the host binary and the Rust components ------------------------------------------
FROM ${RUST_IMAGE} AS rust
RUN rustup target add wasm32-wasip2
WORKDIR /src
# The host embeds the WIT and the component templates (`llmchat new`), so it needs wit/ and
# components/; .dockerignore keeps out every build output and node_modules.
COPY Cargo.toml Cargo.lock ./
COPY host host
COPY tests tests
COPY wit wit
COPY components components
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release --bin llmchat \
    && install -D target/release/llmchat /out/llmchat
# The default app's Rust components only (not the test fixtures).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/components/target \
    cd components \
    && cargo build --locked --release --target wasm32-wasip2 \
        -p chat -p summarizer -p cleanup -p health -p hello \
    && mkdir -p /out/wasm \
    && cp target/wasm32-wasip2/release/chat.wasm target/wasm32-wasip2/release/summarizer.wasm \
        target/wasm32-wasip2/release/cleanup.wasm target/wasm32-wasip2/release/health.wasm \
        target/wasm32-wasip2/release/hello.wasm /out/wasm/

# ---- the TypeScript components (jco componentize) -------------------------------------
FROM ${NODE_IMAGE} AS js
WORKDIR /src
COPY wit wit
COPY components/js components/js
RUN --mount=type=cache,target=/root/.npm \
    components/js/build.sh prompts moderation

# ---- the Python component (componentize-py) -------------------------------------------
FROM ${PYTHON_IMAGE} AS python
WORKDIR /src
COPY wit wit
COPY components/python components/python
RUN --mount=type=cache,target=/root/.cache/pip \
    components/python/build.sh usage

# ---- runtime ----------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE} AS runtime
RUN groupadd --gid 10001 llmchat \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin llmchat \
    && mkdir -p /var/cache/llmchat /var/lib/llmchat \
    && chown 10001:10001 /var/cache/llmchat /var/lib/llmchat
# rustls reads the system's roots for `rediss://` (the LLM client bundles its own).
COPY --from=rust /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=rust /out/llmchat /usr/local/bin/llmchat
COPY deploy/llmchat-probe /usr/local/bin/llmchat-probe
# The default app, laid out as in components/ so that the manifest's relative paths hold.
COPY components/llmchat.toml /opt/llmchat/llmchat.toml
COPY --from=rust /out/wasm/ /opt/llmchat/target/wasm32-wasip2/release/
COPY --from=js /src/components/target/js/prompts.wasm /src/components/target/js/moderation.wasm /opt/llmchat/target/js/
COPY --from=python /src/components/target/python/usage.wasm /opt/llmchat/target/python/

ENV LLMCHAT_MANIFEST=/opt/llmchat/llmchat.toml \
    LLMCHAT_LISTEN=0.0.0.0:8080 \
    LLMCHAT_CACHE_DIR=/var/cache/llmchat \
    LLMCHAT_STATE_DIR=/var/lib/llmchat

USER 10001:10001
# Artifacts are keyed by the wasm's hash and the engine's settings, which include the CPU
# features of this build machine: a host on a CPU without them compiles at its first start
# (the log says so) instead of failing. Before VOLUME: a volume's contents after it are lost.
RUN llmchat compile -f "$LLMCHAT_MANIFEST"

# The artifact cache (filled above; a new named volume starts with these files) and the
# deployments kept across restarts.
VOLUME ["/var/cache/llmchat", "/var/lib/llmchat"]
EXPOSE 8080
# SIGTERM: stop accepting, let in-flight requests, jobs and ticks finish within
# `[http] shutdown_grace` (10 s in the default manifest), exit 0.
STOPSIGNAL SIGTERM
# GET /health on the port of LLMCHAT_LISTEN (deploy/llmchat-probe: bash, as there is no curl).
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["llmchat-probe", "/health"]
ENTRYPOINT ["llmchat"]
CMD ["up"]
