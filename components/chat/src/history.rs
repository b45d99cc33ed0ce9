//! Conversation history in the kv capability, bounded in length and expiring by TTL.
//!
//! Key `conversation:{id}` holds a JSON array of `{role, content}`. Every save rewrites the
//! whole (short) array with a fresh TTL, so an active conversation stays and an idle one
//! disappears without a clean-up job.

use crate::bindings::{kv, llm};
use crate::error::ApiError;
use crate::log;
use crate::settings::HistorySettings;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    pub role: Role,
    pub content: String,
}

impl StoredMessage {
    pub fn user(content: &str) -> Self {
        Self {
            role: Role::User,
            content: content.to_owned(),
        }
    }

    pub fn assistant(content: &str) -> Self {
        Self {
            role: Role::Assistant,
            content: content.to_owned(),
        }
    }

    pub fn to_llm(&self) -> llm::Message {
        let role = match self.role {
            Role::System => llm::Role::System,
            Role::User => llm::Role::User,
            Role::Assistant => llm::Role::Assistant,
        };
        llm::Message {
            role,
            content: self.content.clone(),
        }
    }
}

fn key(conversation_id: &str) -> String {
    format!("conversation:{conversation_id}")
}

/// The stored messages of a conversation; empty when it is new or has expired.
///
/// A value that no longer parses (written by another version, say) is logged and replaced
/// rather than failing every later request of that conversation.
pub fn load(conversation_id: &str) -> Result<Vec<StoredMessage>, ApiError> {
    let Some(bytes) = kv::get(&key(conversation_id)).map_err(ApiError::Kv)? else {
        return Ok(Vec::new());
    };
    match serde_json::from_slice(&bytes) {
        Ok(messages) => Ok(messages),
        Err(error) => {
            log::warn(&format!(
                "conversation `{conversation_id}` has unreadable history, starting afresh: {error}"
            ));
            Ok(Vec::new())
        }
    }
}

/// Appends one exchange, keeps the newest `max_messages` and stores them with the TTL.
pub fn save_exchange(
    conversation_id: &str,
    mut messages: Vec<StoredMessage>,
    user: &str,
    assistant: &str,
    settings: HistorySettings,
) -> Result<(), ApiError> {
    messages.push(StoredMessage::user(user));
    messages.push(StoredMessage::assistant(assistant));
    keep_newest(&mut messages, settings.max_messages);
    let value = serde_json::to_vec(&messages).expect("stored messages always serialize");
    kv::set(&key(conversation_id), &value, Some(settings.ttl_ms)).map_err(ApiError::Kv)
}

fn keep_newest(messages: &mut Vec<StoredMessage>, max: usize) {
    let excess = messages.len().saturating_sub(max);
    messages.drain(..excess);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_newest_messages() {
        let mut messages: Vec<_> = (0..5)
            .map(|i| StoredMessage::user(&i.to_string()))
            .collect();
        keep_newest(&mut messages, 3);
        let contents: Vec<_> = messages.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(contents, ["2", "3", "4"]);
        keep_newest(&mut messages, 10);
        assert_eq!(messages.len(), 3);
    }

    #[test]
    fn stored_format_is_role_and_content() {
        let json =
            serde_json::to_string(&[StoredMessage::user("hi"), StoredMessage::assistant("hello")])
                .expect("serializes");
        assert_eq!(
            json,
            r#"[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]"#
        );
    }
}
