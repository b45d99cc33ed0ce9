//! The plain `wasi:http` hello world: exactly what `wasmtime serve` runs, and proof that a
//! standard proxy component runs unchanged on the llmchat host. It imports no llmchat
//! interface.

use wstd::http::{Body, Error, HeaderValue, Request, Response};

#[wstd::http_server]
async fn main(_request: Request<Body>) -> Result<Response<Body>, Error> {
    let mut response = Response::new(Body::from("Hello, world!\n"));
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("text/plain"));
    Ok(response)
}
