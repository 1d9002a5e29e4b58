//! Reads the gateway's admin listener: `/metrics` parsed from the Prometheus text format, and
//! the probe endpoints.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::emulator::raw_http;

/// One sample: a metric name, its labels and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed scrape.
#[derive(Clone, Debug)]
pub struct Scrape {
    /// The text as served.
    pub text: String,
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// The value of the sample named `name` whose labels are exactly `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    /// The sum over every sample named `name`, whatever its labels.
    pub fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .sum()
    }
}

/// GETs `path` from the admin listener: the status and the body.
pub async fn get(admin: SocketAddr, path: &str) -> (u16, String) {
    let path = path.to_owned();
    let (status, body) =
        tokio::task::spawn_blocking(move || raw_http(admin, "GET", &path, &[], b""))
            .await
            .expect("admin request");
    (status, String::from_utf8(body).expect("utf-8 body"))
}

/// Scrapes and parses `/metrics`.
pub async fn scrape(admin: SocketAddr) -> Scrape {
    let (status, text) = get(admin, "/metrics").await;
    assert_eq!(status, 200, "/metrics: {text}");
    Scrape {
        samples: parse(&text),
        text,
    }
}

/// Parses the Prometheus / OpenMetrics text format: `name{k="v",...} value [timestamp]` lines,
/// comments skipped. Panics on a malformed line, so a broken exposition fails the test.
pub fn parse(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => panic!("malformed sample line: {line}"),
        };
        let mut labels = BTreeMap::new();
        let rest = if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices();
            let end = loop {
                // key
                let mut key = String::new();
                let mut c = chars.next();
                while let Some((_, ch)) = c {
                    if ch == '=' || ch == '}' {
                        break;
                    }
                    if ch != ',' {
                        key.push(ch);
                    }
                    c = chars.next();
                }
                match c {
                    Some((i, '}')) => break i,
                    Some((_, '=')) => {}
                    _ => panic!("malformed labels: {line}"),
                }
                assert!(
                    matches!(chars.next(), Some((_, '"'))),
                    "unquoted label value: {line}"
                );
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, ch)) => value.push(ch),
                            None => panic!("malformed escape: {line}"),
                        },
                        Some((_, '"')) => break,
                        Some((_, ch)) => value.push(ch),
                        None => panic!("unterminated label value: {line}"),
                    }
                }
                labels.insert(key.trim().to_owned(), value);
            };
            &body[end + 1..]
        } else {
            rest
        };
        let value = rest
            .split_whitespace()
            .next()
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value {v:?}: {line}")),
        };
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    samples
}
