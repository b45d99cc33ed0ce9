//! The events of a streamed answer: `start`, one `data` event per piece of text, then
//! `done` — or `error`, after which the stream stops.
//!
//! [`AnswerEvents`] is a plain iterator: each `next` blocks on the llm capability for the
//! next piece, and [`crate::sse::body`] sends every event as soon as it is returned.

use super::{Exchange, Usage};
use crate::bindings::llm;
use crate::error::ApiError;
use crate::{log, sse};
use serde::Serialize;
use wstd::http::body::Bytes;

#[derive(Serialize)]
struct Start<'a> {
    conversation_id: &'a str,
    agent: &'a str,
}

#[derive(Serialize)]
struct Delta<'a> {
    delta: &'a str,
}

#[derive(Serialize)]
struct Done<'a> {
    conversation_id: &'a str,
    usage: Option<Usage>,
}

#[derive(Serialize)]
struct Failed {
    error: String,
}

enum State {
    Start,
    Streaming,
    Finished,
}

pub struct AnswerEvents {
    state: State,
    exchange: Exchange,
    completion: llm::CompletionStream,
    answer: String,
}

impl AnswerEvents {
    pub(super) fn new(exchange: Exchange, completion: llm::CompletionStream) -> Self {
        Self {
            state: State::Start,
            exchange,
            completion,
            answer: String::new(),
        }
    }

    fn start(&self) -> Bytes {
        let start = Start {
            conversation_id: &self.exchange.conversation_id,
            agent: &self.exchange.agent,
        };
        sse::event(Some("start"), &start)
    }

    /// The next piece of text as a `data` event, or the final event.
    fn next_piece(&mut self) -> Bytes {
        loop {
            match self.completion.next() {
                Ok(Some(delta)) if delta.is_empty() => continue,
                Ok(Some(delta)) => {
                    self.answer.push_str(&delta);
                    return sse::event(None, &Delta { delta: &delta });
                }
                Ok(None) => {
                    self.state = State::Finished;
                    return self.done();
                }
                Err(error) => {
                    self.state = State::Finished;
                    return self.error(ApiError::Llm(error));
                }
            }
        }
    }

    /// Saves the turn, then says `done`; a failed save is reported as an `error` event.
    fn done(&mut self) -> Bytes {
        let usage = self.completion.usage().map(Usage::from);
        let answer = std::mem::take(&mut self.answer);
        if let Err(error) = self.exchange.save(&answer) {
            return self.error(error);
        }
        super::usage::record(self.completion.usage().as_ref());
        let done = Done {
            conversation_id: &self.exchange.conversation_id,
            usage,
        };
        sse::event(Some("done"), &done)
    }

    fn error(&self, error: ApiError) -> Bytes {
        let message = error.message();
        log::warn(&format!(
            "streamed chat in conversation `{}` failed: {message}",
            self.exchange.conversation_id
        ));
        sse::event(Some("error"), &Failed { error: message })
    }
}

impl Iterator for AnswerEvents {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        match self.state {
            State::Start => {
                self.state = State::Streaming;
                Some(self.start())
            }
            State::Streaming => Some(self.next_piece()),
            State::Finished => None,
        }
    }
}
