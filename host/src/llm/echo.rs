//! The `echo` provider: deterministic and offline, so `just run` works on a fresh machine
//! and tests can assert exact answers. It answers with the last user message, streamed word
//! by word, and labels itself as `echo` in both `model` and `provider`.

use std::time::Duration;

use async_trait::async_trait;

use super::{
    Completion, CompletionStream, LlmError, LlmProvider, Request, Role, StreamEvent, Usage,
    check_request,
};

pub struct EchoProvider {
    name: String,
    word_delay: Option<Duration>,
}

impl EchoProvider {
    /// An echo provider named `name` (`echo` in the single-provider form).
    pub fn new(name: &str, word_delay: Option<Duration>) -> Self {
        Self {
            name: name.to_string(),
            word_delay,
        }
    }
}

fn answer(request: &Request) -> String {
    request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.content.clone())
        .unwrap_or_default()
}

fn usage(request: &Request, answer: &str) -> Usage {
    let words = |s: &str| u32::try_from(s.split_whitespace().count()).unwrap_or(u32::MAX);
    Usage {
        prompt_tokens: request.messages.iter().map(|m| words(&m.content)).sum(),
        completion_tokens: words(answer),
    }
}

/// Splits text into pieces that concatenate back to it exactly: each word with the
/// whitespace that follows it.
#[cfg(test)]
fn words(text: &str) -> Vec<String> {
    Pieces {
        text: text.to_string(),
        at: 0,
    }
    .collect()
}

/// The pieces of [`words`], cut one at a time as a stream is read: the stream holds its text
/// once, not a string per word (a 2 MB prompt of one-letter words would otherwise become
/// ~56 MB of host memory in one call, before the invocation's budget could stop it).
struct Pieces {
    text: String,
    at: usize,
}

impl Iterator for Pieces {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        let rest = &self.text[self.at..];
        if rest.is_empty() {
            return None;
        }
        let mut end = rest.len();
        let (mut seen_word, mut after_word) = (false, false);
        for (i, c) in rest.char_indices() {
            if c.is_whitespace() {
                after_word |= seen_word;
            } else if after_word {
                end = i;
                break;
            } else {
                seen_word = true;
            }
        }
        self.at += end;
        Some(rest[..end].to_string())
    }
}

#[async_trait]
impl LlmProvider for EchoProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn default_model(&self) -> &str {
        "echo"
    }

    /// Offline: always reachable.
    async fn probe(&self) -> Result<(), LlmError> {
        Ok(())
    }

    async fn complete(&self, request: Request) -> Result<Completion, LlmError> {
        check_request(&request)?;
        let content = answer(&request);
        Ok(Completion {
            usage: Some(usage(&request, &content)),
            content,
            model: "echo".into(),
            provider: "echo".into(),
        })
    }

    async fn stream(&self, request: Request) -> Result<CompletionStream, LlmError> {
        check_request(&request)?;
        let content = answer(&request);
        let usage = usage(&request, &content);
        let delay = self.word_delay;
        let events = Pieces {
            text: content,
            at: 0,
        }
        .map(StreamEvent::Delta)
        .chain(std::iter::once(StreamEvent::Usage(usage)));
        let stream = futures::stream::iter(events).then(move |event| async move {
            if let (Some(d), StreamEvent::Delta(_)) = (delay, &event) {
                crate::timers::sleep(d).await;
            }
            Ok(event)
        });
        Ok(Box::pin(stream))
    }
}

use futures::StreamExt as _;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::Message;

    fn request(text: &str) -> Request {
        Request {
            messages: vec![
                Message {
                    role: Role::System,
                    content: "be brief".into(),
                },
                Message {
                    role: Role::User,
                    content: text.into(),
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn words_concatenate_back_to_the_text() {
        let text = "  hello   big\nworld ";
        let w = words(text);
        assert_eq!(w.concat(), text);
        assert_eq!(w.len(), 3);
    }

    #[tokio::test]
    async fn complete_echoes_the_last_user_message() {
        let c = EchoProvider::new("echo", None)
            .complete(request("hello world"))
            .await
            .unwrap();
        assert_eq!(c.content, "hello world");
        assert_eq!((c.model.as_str(), c.provider.as_str()), ("echo", "echo"));
        assert_eq!(
            c.usage,
            Some(Usage {
                prompt_tokens: 4,
                completion_tokens: 2
            })
        );
    }

    #[tokio::test]
    async fn stream_yields_word_by_word_then_usage() {
        let s = EchoProvider::new("echo", None)
            .stream(request("a b c"))
            .await
            .unwrap();
        let events: Vec<_> = s.map(|e| e.unwrap()).collect().await;
        assert_eq!(events.len(), 4);
        assert_eq!(events[1], StreamEvent::Delta("b ".into()));
        assert!(matches!(events[3], StreamEvent::Usage(_)));
    }

    #[tokio::test]
    async fn no_messages_is_an_invalid_request() {
        let err = EchoProvider::new("echo", None)
            .complete(Request::default())
            .await
            .unwrap_err();
        assert!(matches!(err, LlmError::InvalidRequest(_)));
    }
}
