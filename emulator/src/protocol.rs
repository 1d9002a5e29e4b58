//! The AWS Query protocol: form-encoded requests in, XML out, and the Query error envelope;
//! and the error envelope of the JSON 1.1 protocol CloudTrail speaks.

use std::collections::HashMap;
use std::fmt::Write as _;

use http::StatusCode;
use time::OffsetDateTime;
use time::macros::format_description;

/// The AWS services the API listener speaks, each with its own model metadata: two over the
/// Query protocol, CloudTrail over JSON 1.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Service {
    Redshift,
    Sts,
    CloudTrail,
}

impl Service {
    /// Which Query service a request is for. Both share one listener, so the body decides:
    /// `Action=AssumeRole` or `Version=2011-06-15` is STS, anything else Redshift (assumption:
    /// the emulator's own rule; on AWS they are different hosts).
    pub(crate) fn of(query: &QueryRequest) -> Service {
        if query.action.as_deref() == Some("AssumeRole")
            || query.version.as_deref() == Some(Service::Sts.api_version())
        {
            Service::Sts
        } else {
            Service::Redshift
        }
    }

    /// The model's `metadata.xmlNamespace`; CloudTrail's JSON has none.
    pub(crate) fn xmlns(self) -> &'static str {
        match self {
            Service::Redshift => "http://redshift.amazonaws.com/doc/2012-12-01/",
            Service::Sts => "https://sts.amazonaws.com/doc/2011-06-15/",
            Service::CloudTrail => "",
        }
    }

    /// The only API version the service's endpoint speaks.
    pub(crate) fn api_version(self) -> &'static str {
        match self {
            Service::Redshift => "2012-12-01",
            Service::Sts => "2011-06-15",
            Service::CloudTrail => "2013-11-01",
        }
    }

    /// The SigV4 signing name (the credential scope's service).
    pub(crate) fn signing_name(self) -> &'static str {
        match self {
            Service::Redshift => "redshift",
            Service::Sts => "sts",
            Service::CloudTrail => "cloudtrail",
        }
    }

    /// CloudTrail's `eventSource`.
    pub(crate) fn event_source(self) -> &'static str {
        match self {
            Service::Redshift => "redshift.amazonaws.com",
            Service::Sts => "sts.amazonaws.com",
            Service::CloudTrail => "cloudtrail.amazonaws.com",
        }
    }

    /// The `Content-Type` of every answer, errors included.
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Service::Redshift | Service::Sts => "text/xml",
            Service::CloudTrail => "application/x-amz-json-1.1",
        }
    }
}

/// A decoded Query request body: `Action`, `Version` and the operation's members.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct QueryRequest {
    /// The first `Action` of the body.
    pub action: Option<String>,
    /// The first `Version` of the body.
    pub version: Option<String>,
    /// Every other member, by its form name (`DataShareArn`, `Tags.member.1.Key`, ...).
    pub params: HashMap<String, String>,
}

impl QueryRequest {
    /// Decodes `application/x-www-form-urlencoded` (`+` and `%20` both mean space). When a key
    /// repeats, the first value wins (an assumption; AWS's behaviour is not documented).
    pub fn parse(body: &[u8]) -> QueryRequest {
        let mut req = QueryRequest::default();
        for (k, v) in form_urlencoded::parse(body) {
            match &*k {
                "Action" if req.action.is_none() => req.action = Some(v.into_owned()),
                "Version" if req.version.is_none() => req.version = Some(v.into_owned()),
                "Action" | "Version" => {}
                _ => {
                    req.params.entry(k.into_owned()).or_insert(v.into_owned());
                }
            }
        }
        req
    }

    /// An optional string member.
    pub(crate) fn string(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// A required string member; missing → `MissingParameter` (assumption: the code AWS's
    /// Common Errors list gives; not observed for these operations).
    pub(crate) fn required(&self, name: &str) -> Result<&str, AwsError> {
        match self.string(name) {
            Some(v) => Ok(v),
            None => Err(AwsError::missing_parameter(name)),
        }
    }

    /// An optional boolean member: only lowercase `true`/`false`, as both SDKs send them.
    pub(crate) fn boolean(&self, name: &str) -> Result<Option<bool>, AwsError> {
        match self.string(name) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => Err(AwsError::invalid_value(name, other)),
        }
    }

    /// A list member `PREFIX.member.N[.FIELD]=value`, as the Query protocol writes lists of
    /// strings and of structures: `(N, [(FIELD or "", value)])` in index order.
    pub fn indexed(&self, prefix: &str) -> Vec<(u32, Vec<(&str, &str)>)> {
        let head = format!("{prefix}.member.");
        let mut by_index: std::collections::BTreeMap<u32, Vec<(&str, &str)>> =
            std::collections::BTreeMap::new();
        for (k, v) in &self.params {
            let Some(rest) = k.strip_prefix(&head) else {
                continue;
            };
            let (n, field) = rest.split_once('.').unwrap_or((rest, ""));
            if let Ok(n) = n.parse::<u32>() {
                by_index.entry(n).or_default().push((field, v.as_str()));
            }
        }
        by_index.into_iter().collect()
    }

    /// An optional integer member.
    pub(crate) fn integer(&self, name: &str) -> Result<Option<i64>, AwsError> {
        match self.string(name) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| AwsError::invalid_value(name, v)),
        }
    }
}

/// An error as the Query protocol reports it: a status, a code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AwsError {
    pub(crate) status: StatusCode,
    pub(crate) code: std::borrow::Cow<'static, str>,
    pub(crate) message: String,
}

impl AwsError {
    pub(crate) fn new(
        status: StatusCode,
        code: impl Into<std::borrow::Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        AwsError {
            status,
            code: code.into(),
            message: message.into(),
        }
    }

    /// 400 `InvalidDataShareFault` (modeled: httpStatusCode 400, senderFault).
    pub(crate) fn invalid_datashare(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidDataShareFault", message)
    }

    /// 400 `InvalidNamespaceFault` (modeled: httpStatusCode 400, senderFault).
    pub(crate) fn invalid_namespace(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidNamespaceFault", message)
    }

    pub(crate) fn missing_parameter(name: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "MissingParameter",
            format!("The request must contain the parameter {name}"),
        )
    }

    pub(crate) fn invalid_value(name: &str, value: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValue",
            format!("Invalid value '{value}' for parameter {name}"),
        )
    }

    pub(crate) fn invalid_combination(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidParameterCombination",
            message,
        )
    }

    /// `Sender` for 4xx, `Receiver` for 5xx (the convention; neither SDK reads it).
    fn fault_type(&self) -> &'static str {
        if self.status.is_server_error() {
            "Receiver"
        } else {
            "Sender"
        }
    }
}

/// A small XML writer; every text node goes through [`escape`].
#[derive(Debug, Default)]
pub(crate) struct Xml {
    out: String,
}

impl Xml {
    pub(crate) fn new() -> Self {
        Xml::default()
    }

    pub(crate) fn open(&mut self, name: &str) -> &mut Self {
        let _ = write!(self.out, "<{name}>");
        self
    }

    pub(crate) fn close(&mut self, name: &str) -> &mut Self {
        let _ = write!(self.out, "</{name}>");
        self
    }

    pub(crate) fn text(&mut self, name: &str, value: &str) -> &mut Self {
        let _ = write!(self.out, "<{name}>{}</{name}>", escape(value));
        self
    }

    /// Booleans in lower case: the Rust SDK rejects `True`.
    pub(crate) fn boolean(&mut self, name: &str, value: bool) -> &mut Self {
        self.text(name, if value { "true" } else { "false" })
    }

    /// A `TStamp`: RFC 3339 UTC with milliseconds and `Z` (the Rust SDK needs the offset).
    pub(crate) fn timestamp(&mut self, name: &str, value: OffsetDateTime) -> &mut Self {
        self.text(name, &format_timestamp(value))
    }

    pub(crate) fn finish(self) -> String {
        self.out
    }
}

/// `YYYY-MM-DDTHH:MM:SS.sssZ` in UTC.
pub(crate) fn format_timestamp(value: OffsetDateTime) -> String {
    let fmt =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    // Formatting a UTC date with a fixed, valid description only fails for years beyond 9999.
    value
        .to_offset(time::UtcOffset::UTC)
        .format(&fmt)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".to_owned())
}

/// Escapes text for an XML element body. Characters XML 1.0 cannot carry at all become U+FFFD.
pub(crate) fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// The success envelope: `<OpResponse>` with `<OpResult>` first, then `ResponseMetadata`
/// (the Rust SDK fails when the order is reversed).
pub(crate) fn success_body(
    service: Service,
    action: &str,
    result: &str,
    request_id: &str,
) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{action}Response xmlns=\"{}\"><{action}Result>{result}</{action}Result><ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata></{action}Response>",
        service.xmlns(),
        escape(request_id)
    )
}

/// The Query error envelope, with no `<Errors>` wrapper (the Rust SDK loses the code with one).
/// STS answers in the same envelope (its own namespace). CloudTrail answers JSON 1.1's
/// `{"__type": CODE, "message": TEXT}`, which both SDKs read the code from.
pub(crate) fn error_body(service: Service, err: &AwsError, request_id: &str) -> String {
    if service == Service::CloudTrail {
        return serde_json::json!({ "__type": err.code, "message": err.message }).to_string();
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ErrorResponse xmlns=\"{}\"><Error><Type>{}</Type><Code>{}</Code><Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
        service.xmlns(),
        err.fault_type(),
        err.code,
        escape(&err.message),
        escape(request_id)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plus_and_percent_20_both_decode_to_space() {
        let a = QueryRequest::parse(
            b"Action=DescribeDataShares&Version=2012-12-01&DataShareArn=a+b%20c%2Fd",
        );
        assert_eq!(a.action.as_deref(), Some("DescribeDataShares"));
        assert_eq!(a.version.as_deref(), Some("2012-12-01"));
        assert_eq!(a.string("DataShareArn"), Some("a b c/d"));
    }

    #[test]
    fn booleans_must_be_lowercase_and_integers_decimal() {
        let q = QueryRequest::parse(b"A=true&B=false&C=True&N=20&M=x");
        assert_eq!(q.boolean("A"), Ok(Some(true)));
        assert_eq!(q.boolean("B"), Ok(Some(false)));
        assert_eq!(q.boolean("Z"), Ok(None));
        assert_eq!(q.boolean("C").unwrap_err().code, "InvalidParameterValue");
        assert_eq!(q.integer("N"), Ok(Some(20)));
        assert_eq!(q.integer("M").unwrap_err().code, "InvalidParameterValue");
        assert_eq!(q.required("Q").unwrap_err().code, "MissingParameter");
    }

    #[test]
    fn escape_handles_markup_and_control_characters() {
        assert_eq!(
            escape("a<b>&\"c'\u{1}"),
            "a&lt;b&gt;&amp;&quot;c&apos;\u{FFFD}"
        );
    }

    #[test]
    fn timestamps_have_milliseconds_and_z() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_714_557_600_123_456_789).unwrap();
        assert_eq!(format_timestamp(t), "2024-05-01T10:00:00.123Z");
    }

    #[test]
    fn success_puts_result_before_metadata_and_errors_have_no_errors_wrapper() {
        let ok = success_body(Service::Redshift, "RejectDataShare", "<X>1</X>", "rid");
        let result = ok.find("<RejectDataShareResult>").unwrap();
        let meta = ok.find("<ResponseMetadata>").unwrap();
        assert!(result < meta);
        let err = error_body(
            Service::Redshift,
            &AwsError::invalid_datashare("no <share>"),
            "rid",
        );
        assert!(err.contains("<ErrorResponse xmlns=\"http://redshift.amazonaws.com/doc/2012-12-01/\"><Error><Type>Sender</Type><Code>InvalidDataShareFault</Code><Message>no &lt;share&gt;</Message></Error><RequestId>rid</RequestId>"));
        let server = error_body(
            Service::Sts,
            &AwsError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalFailure", "x"),
            "r",
        );
        assert!(server.contains("<Type>Receiver</Type>"));
        assert!(server.contains("xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\""));
    }
}
