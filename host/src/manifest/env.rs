//! `${VAR}` and `${VAR:-default}` in the manifest's strings, filled from the environment
//! before the TOML is read, so that one manifest serves every environment (a Redis URL, a
//! model name, a route prefix).
//!
//! Only double-quoted strings (`"..."` and `"""..."""`) are expanded; single-quoted ones
//! (`'...'`) are taken as written, as in a shell, and so are comments, keys outside quotes
//! and everything else. `$${` writes a literal `${`. A value is escaped for the string it
//! lands in, so it can never end the string or add TOML of its own, and a line of the
//! manifest stays one line, so parse errors keep their line numbers.

use std::borrow::Cow;

use anyhow::{Result, bail};

/// Where the scanner is in the TOML text.
#[derive(Clone, Copy, PartialEq)]
enum In {
    Code,
    Comment,
    /// `"..."` (`multi`: `"""..."""`).
    Basic {
        multi: bool,
    },
    /// `'...'` (`multi`: `'''...'''`).
    Literal {
        multi: bool,
    },
}

/// `text` with every `${VAR}` / `${VAR:-default}` in its double-quoted strings replaced by
/// `lookup(VAR)` (or the default when it is `None`); an unset variable without a default is
/// an error naming it and its line.
pub fn expand(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Cow<'_, str>> {
    if !text.contains("${") {
        return Ok(Cow::Borrowed(text));
    }
    let mut out = String::with_capacity(text.len());
    let mut state = In::Code;
    let mut line = 1;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let starts = |s: &str| rest.starts_with(s);
        let mut step = c.len_utf8();
        match state {
            In::Code if c == '#' => state = In::Comment,
            In::Code if starts("\"\"\"") => (state, step) = (In::Basic { multi: true }, 3),
            In::Code if c == '"' => state = In::Basic { multi: false },
            In::Code if starts("'''") => (state, step) = (In::Literal { multi: true }, 3),
            In::Code if c == '\'' => state = In::Literal { multi: false },
            In::Comment if c == '\n' => state = In::Code,
            In::Basic { .. } if c == '\\' => {
                step += rest[1..].chars().next().map_or(0, char::len_utf8)
            }
            In::Basic { multi: true } if starts("\"\"\"") => (state, step) = (In::Code, 3),
            In::Basic { multi: false } if c == '"' || c == '\n' => state = In::Code,
            In::Literal { multi: true } if starts("'''") => (state, step) = (In::Code, 3),
            In::Literal { multi: false } if c == '\'' || c == '\n' => state = In::Code,
            In::Basic { .. } if starts("$${") => {
                out.push_str("${");
                rest = &rest[3..];
                continue;
            }
            In::Basic { .. } if starts("${") => {
                let Some(end) = rest.find('}') else {
                    bail!(
                        "line {line}: `${{` without its closing `}}` (write `$${{` for a literal `${{`)"
                    );
                };
                let inner = &rest[2..end];
                let (name, default) = match inner.split_once(":-") {
                    Some((name, default)) => (name, Some(default)),
                    None => (inner, None),
                };
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    bail!(
                        "line {line}: `${{{inner}}}`: a variable name is letters, digits and `_`"
                    );
                }
                let value = match (lookup(name), default) {
                    (Some(value), _) => value,
                    (None, Some(default)) => default.to_string(),
                    (None, None) => bail!(
                        "line {line}: environment variable `{name}` is not set, and `${{{name}}}` has no default (write `${{{name}:-default}}`)"
                    ),
                };
                escape_into(&mut out, &value);
                rest = &rest[end + 1..];
                continue;
            }
            _ => {}
        }
        let (taken, left) = rest.split_at(step.min(rest.len()));
        line += taken.matches('\n').count();
        out.push_str(taken);
        rest = left;
    }
    Ok(Cow::Owned(out))
}

/// `value` as the inside of a TOML basic string.
fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "URL" => Some("redis://10.0.0.1:6379".into()),
            "QUOTED" => Some("a \"b\" \\ c\nd".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn expanded(text: &str) -> String {
        expand(text, env).unwrap().into_owned()
    }

    #[test]
    fn double_quoted_strings_are_expanded_with_defaults() {
        assert_eq!(
            expanded("url = \"${URL}\""),
            "url = \"redis://10.0.0.1:6379\""
        );
        assert_eq!(expanded("m = \"${MODEL:-gpt-4o}/x\""), "m = \"gpt-4o/x\"");
        assert_eq!(expanded("e = \"[${EMPTY:-unused}]\""), "e = \"[]\"");
        assert_eq!(
            expanded("t = \"\"\"\n${URL}\n\"\"\""),
            "t = \"\"\"\nredis://10.0.0.1:6379\n\"\"\""
        );
    }

    #[test]
    fn values_are_escaped_and_cannot_leave_their_string() {
        let text = expanded("v = \"${QUOTED}\"");
        assert_eq!(text, "v = \"a \\\"b\\\" \\\\ c\\nd\"");
        let parsed: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(parsed["v"].as_str(), Some("a \"b\" \\ c\nd"));
    }

    #[test]
    fn single_quotes_comments_and_escapes_are_left_as_written() {
        for text in ["v = '${URL}'", "v = '''${URL}'''", "# ${NOT_SET}\nv = 1"] {
            assert_eq!(expanded(text), text);
        }
        assert_eq!(expanded("v = \"$${URL}\""), "v = \"${URL}\"");
    }

    #[test]
    fn an_unset_variable_without_a_default_is_an_error_naming_it_and_its_line() {
        let e = expand("a = 1\nb = \"${NOT_SET}\"", env)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "line 2: environment variable `NOT_SET` is not set, and `${NOT_SET}` has no default (write `${NOT_SET:-default}`)"
        );
        let e = expand("b = \"${BAD NAME}\"", env).unwrap_err().to_string();
        assert!(
            e.contains("a variable name is letters, digits and `_`"),
            "{e}"
        );
        let e = expand("b = \"${OPEN\"", env).unwrap_err().to_string();
        assert!(e.contains("without its closing"), "{e}");
    }
}
