//! The llm request: one system message with the instruction (for a summary or a title),
//! then the whole conversation as a single user message of `role: content` lines.
//!
//! The conversation goes in as a transcript rather than as the original turns so that the
//! model summarizes it instead of continuing it.

use crate::bindings::llm;
use conversation_store::Message;

/// The instruction used when the config key `prompt` is not set.
pub const DEFAULT_PROMPT: &str = "Summarize the conversation in at most three sentences.";

/// The instruction used for a title when the config key `title_prompt` is not set.
pub const DEFAULT_TITLE_PROMPT: &str =
    "Give this conversation a short title of at most six words. Answer with the title only.";

pub fn request(prompt: &str, messages: &[Message]) -> llm::Request {
    llm::Request {
        model: None,
        messages: vec![
            llm::Message {
                role: llm::Role::System,
                content: prompt.to_owned(),
            },
            llm::Message {
                role: llm::Role::User,
                content: transcript(messages),
            },
        ],
        max_tokens: None,
        temperature: None,
        agent: None,
    }
}

fn transcript(messages: &[Message]) -> String {
    let lines: Vec<String> = messages
        .iter()
        .map(|message| format!("{}: {}", message.role.as_str(), message.content))
        .collect();
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_instruction_then_transcript() {
        let messages = [Message::user("hi"), Message::assistant("hello\nthere")];
        let request = request(DEFAULT_PROMPT, &messages);
        assert_eq!(request.model, None);
        let roles: Vec<_> = request
            .messages
            .iter()
            .map(|m| (m.role, m.content.as_str()))
            .collect();
        assert_eq!(
            roles,
            [
                (llm::Role::System, DEFAULT_PROMPT),
                (llm::Role::User, "user: hi\nassistant: hello\nthere"),
            ]
        );
    }
}
