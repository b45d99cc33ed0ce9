//! End-to-end tests: the real `llmchat` binary, real compiled components, real HTTP.
//!
//! Each test starts its own host on a free loopback port with a manifest written to a
//! temporary folder, and talks to it over HTTP. The only stand-in is `support::fake_openai`,
//! a local server speaking the OpenAI wire format, because there is no internet here.

mod admin;
mod anthropic;
mod chat_api;
mod compile;
mod components_guard;
mod config_env;
mod connections;
mod container_image;
mod dashboard;
mod dashboard_queues;
mod deploy;
mod deploy_files;
mod fixtures;
mod host_memory;
mod idle_code;
mod jobs;
mod kv_conformance;
mod lifecycle;
mod llm_routing;
mod logs;
mod manifest_errors;
mod metrics;
mod openai;
mod otel;
mod polyglot;
mod proxies;
mod queue_conformance;
mod queues;
mod rate_limits;
mod redis_cluster;
mod redis_failover;
mod redis_pool;
mod redis_prefix;
mod redis_tls;
mod schedules;
mod support;
mod tls;
