//! How conversations are laid out in kv: the contract between `chat`, which writes them,
//! and the `summarizer` and `cleanup` processors, which read and delete them through a
//! shared kv namespace (`kv_namespace` in the manifest).
//!
//! Keeping the key names, the id alphabet and the stored message format in one crate means
//! the three components cannot drift apart. A library, not a component: it imports nothing.

use serde::{Deserialize, Serialize};

/// The longest conversation id accepted, in bytes.
const MAX_ID_LEN: usize = 128;

/// What a valid id looks like, for error messages.
pub const ID_RULE: &str = "1 to 128 characters of A-Z, a-z, 0-9, `_` or `-`";

/// Whether `id` is 1 to 128 characters of `[A-Za-z0-9_-]`.
///
/// An id ends up inside kv keys, so it is restricted to a short, key-safe alphabet; every
/// component that takes an id from outside (a request, a job payload) checks it.
pub fn is_valid_id(id: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The key of a conversation's history: a JSON array of [`Message`], newest last.
pub fn history_key(conversation_id: &str) -> String {
    format!("conversation:{conversation_id}")
}

/// The key of a conversation's summary: UTF-8 text written by the summarizer.
pub fn summary_key(conversation_id: &str) -> String {
    format!("summary:{conversation_id}")
}

/// The key of a conversation's title: UTF-8 text written by the summarizer after the first
/// exchange.
pub fn title_key(conversation_id: &str) -> String {
    format!("title:{conversation_id}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    /// The lowercase name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }
}

/// One stored message: `{"role": "user" | "assistant" | "system", "content": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_key_safe_ids_up_to_128_characters() {
        assert!(is_valid_id("a"));
        assert!(is_valid_id("Conv_1-x"));
        assert!(is_valid_id(&"z".repeat(128)));
    }

    #[test]
    fn rejects_empty_long_or_unsafe_ids() {
        assert!(!is_valid_id(""));
        assert!(!is_valid_id(&"z".repeat(129)));
        assert!(!is_valid_id("a:b"));
        assert!(!is_valid_id("a b"));
        assert!(!is_valid_id("é"));
    }

    #[test]
    fn keys_are_prefixed_by_kind() {
        assert_eq!(history_key("c-1"), "conversation:c-1");
        assert_eq!(summary_key("c-1"), "summary:c-1");
        assert_eq!(title_key("c-1"), "title:c-1");
    }

    #[test]
    fn stored_format_is_role_and_content() {
        let json = serde_json::to_string(&[Message::user("hi"), Message::assistant("hello")])
            .expect("serializes");
        assert_eq!(
            json,
            r#"[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]"#
        );
        let parsed: Vec<Message> =
            serde_json::from_str(r#"[{"role":"system","content":"s"}]"#).expect("parses");
        assert_eq!(parsed[0].role.as_str(), "system");
    }
}
