//! Human-friendly sizes ("64MiB") and durations ("30s") as they appear in the manifest.
//!
//! Both parse strictly: an unknown unit or a missing number is an error that quotes the bad
//! value, so a typo never silently becomes a default.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A size in bytes, written with a binary or decimal unit: `64MiB`, `512KiB`, `1GB`, `4096`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn mib(n: u64) -> Self {
        Self(n * 1024 * 1024)
    }

    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl std::str::FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (number, unit) = split_number(s.trim()).ok_or_else(|| {
            format!("invalid size {s:?}: expected a number and a unit, e.g. \"64MiB\"")
        })?;
        let scale: u64 = match unit {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            other => {
                return Err(format!(
                    "invalid size {s:?}: unknown unit {other:?} (use B, KiB, MiB, GiB, KB, MB or GB)"
                ));
            }
        };
        number
            .checked_mul(scale)
            .map(ByteSize)
            .ok_or_else(|| format!("invalid size {s:?}: too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b >= 1 << 30 && b.is_multiple_of(1 << 30) {
            write!(f, "{}GiB", b >> 30)
        } else if b >= 1 << 20 && b.is_multiple_of(1 << 20) {
            write!(f, "{}MiB", b >> 20)
        } else if b >= 1 << 10 && b.is_multiple_of(1 << 10) {
            write!(f, "{}KiB", b >> 10)
        } else {
            write!(f, "{b}B")
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_from_str_or_int(d, "a size such as \"64MiB\"", |n| Ok(ByteSize(n)))
    }
}

/// Written as the manifest writes it, e.g. `"64MiB"`, so a deploy's record reads back the same.
impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A duration written with a unit: `250ms`, `30s`, `5m`, `1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl std::str::FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (number, unit) = split_number(s.trim()).ok_or_else(|| {
            format!("invalid duration {s:?}: expected a number and a unit, e.g. \"30s\"")
        })?;
        let duration = match unit {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" | "min" => Duration::from_secs(number.saturating_mul(60)),
            "h" => Duration::from_secs(number.saturating_mul(3600)),
            "" => {
                return Err(format!(
                    "invalid duration {s:?}: a unit is required (ms, s, m or h)"
                ));
            }
            other => {
                return Err(format!(
                    "invalid duration {s:?}: unknown unit {other:?} (use ms, s, m or h)"
                ));
            }
        };
        Ok(HumanDuration(duration))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_from_str_or_int(d, "a duration such as \"30s\"", |_| {
            Err("a duration needs a unit, e.g. \"30s\" or \"250ms\"".to_string())
        })
    }
}

/// Written as the manifest writes it, e.g. `"30s"`.
impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Splits "64MiB" into (64, "MiB"). None when there is no leading number.
fn split_number(s: &str) -> Option<(u64, &str)> {
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if digits == 0 {
        return None;
    }
    let number = s[..digits].parse().ok()?;
    Some((number, s[digits..].trim()))
}

fn deserialize_from_str_or_int<'de, D, T>(
    d: D,
    expecting: &'static str,
    from_int: fn(u64) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr<Err = String>,
{
    struct Visitor<T> {
        expecting: &'static str,
        from_int: fn(u64) -> Result<T, String>,
    }
    impl<T: std::str::FromStr<Err = String>> de::Visitor<'_> for Visitor<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            v.parse().map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
            (self.from_int)(v).map_err(E::custom)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
            let v = u64::try_from(v).map_err(|_| E::custom(format!("{v} is negative")))?;
            (self.from_int)(v).map_err(E::custom)
        }
    }
    d.deserialize_any(Visitor {
        expecting,
        from_int,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!("64MiB".parse::<ByteSize>(), Ok(ByteSize(64 << 20)));
        assert_eq!("1 GiB".parse::<ByteSize>(), Ok(ByteSize(1 << 30)));
        assert_eq!("10KB".parse::<ByteSize>(), Ok(ByteSize(10_000)));
        assert_eq!("4096".parse::<ByteSize>(), Ok(ByteSize(4096)));
    }

    #[test]
    fn bad_sizes_name_the_value_and_the_problem() {
        let err = "64 pages".parse::<ByteSize>().unwrap_err();
        assert!(
            err.contains("\"64 pages\"") && err.contains("unknown unit"),
            "{err}"
        );
        let err = "MiB".parse::<ByteSize>().unwrap_err();
        assert!(err.contains("expected a number"), "{err}");
    }

    #[test]
    fn durations_need_a_known_unit() {
        assert_eq!(
            "250ms".parse::<HumanDuration>().unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!(
            "2m".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(120)
        );
        assert!(
            "30".parse::<HumanDuration>()
                .unwrap_err()
                .contains("unit is required")
        );
        assert!(
            "3 fortnights"
                .parse::<HumanDuration>()
                .unwrap_err()
                .contains("unknown unit")
        );
    }

    #[test]
    fn sizes_and_durations_serialize_as_they_are_written() {
        let size: ByteSize = serde_json::from_str("\"65536KiB\"").unwrap();
        assert_eq!(serde_json::to_string(&size).unwrap(), "\"64MiB\"");
        let duration: HumanDuration = serde_json::from_str("\"1500ms\"").unwrap();
        assert_eq!(serde_json::to_string(&duration).unwrap(), "\"1500ms\"");
    }

    #[test]
    fn display_round_trips() {
        for s in ["64MiB", "1GiB", "3KiB", "17B"] {
            assert_eq!(s.parse::<ByteSize>().unwrap().to_string(), s);
        }
        for s in ["30s", "250ms"] {
            assert_eq!(s.parse::<HumanDuration>().unwrap().to_string(), s);
        }
    }
}
