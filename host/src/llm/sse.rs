//! A minimal Server-Sent Events decoder for provider streams.
//!
//! It yields the `data` payload of each event. Lines are bounded ([`MAX_LINE`]) so a
//! misbehaving provider cannot make the host buffer without limit.

/// Longest SSE line accepted; an OpenAI chunk is a few hundred bytes.
pub const MAX_LINE: usize = 1 << 20;

#[derive(Default)]
pub struct SseDecoder {
    line: Vec<u8>,
    data: Option<String>,
}

impl SseDecoder {
    /// Feeds bytes; returns the data of every event they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, String> {
        let mut events = Vec::new();
        for &b in bytes {
            if b != b'\n' {
                if self.line.len() >= MAX_LINE {
                    return Err(format!(
                        "an event stream line is longer than {MAX_LINE} bytes"
                    ));
                }
                self.line.push(b);
                continue;
            }
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
            let line = String::from_utf8(std::mem::take(&mut self.line))
                .map_err(|_| "an event stream line is not UTF-8".to_string())?;
            if line.is_empty() {
                events.extend(self.data.take());
            } else if let Some(value) = line.strip_prefix("data:") {
                let value = value.strip_prefix(' ').unwrap_or(value);
                match &mut self.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => self.data = Some(value.to_string()),
                }
            }
            // Comments (":") and other fields (event, id, retry) carry nothing we use.
        }
        Ok(events)
    }

    /// The data of an event left unterminated when the stream ended.
    pub fn finish(&mut self) -> Option<String> {
        self.data.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_are_reassembled() {
        let mut d = SseDecoder::default();
        assert!(d.push(b"data: {\"a\"").unwrap().is_empty());
        assert_eq!(
            d.push(b":1}\r\n\r\n: comment\n\ndata: [DONE]\n\n").unwrap(),
            vec!["{\"a\":1}".to_string(), "[DONE]".to_string()]
        );
    }

    #[test]
    fn multi_line_data_is_joined() {
        let mut d = SseDecoder::default();
        assert_eq!(
            d.push(b"data: a\ndata: b\n\n").unwrap(),
            vec!["a\nb".to_string()]
        );
    }

    #[test]
    fn overlong_lines_are_refused() {
        let mut d = SseDecoder::default();
        assert!(d.push(&vec![b'x'; MAX_LINE + 1]).is_err());
    }
}
