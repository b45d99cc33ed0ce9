//! The `wasi:http/incoming-handler` export.
//!
//! This is what `#[wstd::http_server]` generates, with one difference: when the client stops
//! reading before the body is complete (a chat UI closing an SSE stream), the macro of
//! wstd 0.6.8 unwraps the write error and the instance traps. Here the invocation ends
//! normally with a log line instead, so an early disconnect is not reported as a crash.
//! It uses the same `wstd` pieces as the macro (`Responder`, `try_from_incoming`), which is
//! why `wstd` is pinned to an exact version.

use crate::log;
use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};
use wstd::http::request::try_from_incoming;
use wstd::http::server::Responder;

struct Server;

impl Guest for Server {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let responder = Responder::new(response_out);
        wstd::runtime::block_on(async move {
            let request = match try_from_incoming(request) {
                Ok(request) => request,
                Err(error) => return responder.fail(error),
            };
            let response = crate::respond(request).await;
            if let Err(error) = responder.respond(response).await {
                log::info(&format!(
                    "response body not fully sent, the client went away: {error:#}"
                ));
            }
        });
    }
}

wasip2::http::proxy::export!(Server with_types_in wasip2);
