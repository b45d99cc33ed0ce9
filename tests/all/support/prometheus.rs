//! Reading `/metrics`: a small parser of the Prometheus text format, enough for tests.

use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;

use super::{Host, client};

/// One sample line of a Prometheus text exposition.
#[derive(Debug)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Parses the sample lines (`name{k="v",...} value`); comments and blank lines are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("`series value`");
            let value = match value {
                "+Inf" => f64::INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            let (name, labels) = match series.split_once('{') {
                None => (series, Vec::new()),
                Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}').expect("`}`"))),
            };
            Sample {
                name: name.to_string(),
                labels,
                value,
            }
        })
        .collect()
}

/// `k="v",k2="v2"`, with `\"`, `\\` and `\n` escapes in values.
fn parse_labels(mut rest: &str) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").expect("`key=\"`");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().expect("a closing quote") {
                (i, '"') => break i,
                (_, '\\') => match chars.next().expect("an escaped char").1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.to_string(), value));
        rest = after[end + 1..].trim_start_matches(',');
    }
    labels
}

/// The value of the series `name` with exactly `labels`, if the exposition has it.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
        .map(|s| s.value)
}

/// Ticks of schedule `schedule` that ended with `outcome` (`ok`, `failed`, `elsewhere`, ...).
pub fn schedule_ticks(samples: &[Sample], schedule: &str, outcome: &str) -> f64 {
    value(
        samples,
        "llmchat_schedule_ticks_total",
        &[("schedule", schedule), ("outcome", outcome)],
    )
    .unwrap_or(0.0)
}

pub fn scrape(host: &Host) -> Vec<Sample> {
    let response = client()
        .get(host.url("/metrics"))
        .send()
        .expect("GET /metrics");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    parse(&response.text().unwrap())
}

/// The sum of every series of `name` whose labels include `labels`.
pub fn sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
        .map(|s| s.value)
        .sum()
}
