//! `log-format-upstream`: an nginx `log_format` string, read into text and the variables the
//! proxy can fill in. A variable it cannot fill is refused with the list of those it can, so
//! a migrated format never logs a silent `-` where the operator expected a value.
use crate::snapshot::{LogFormat, LogPart, LogVar};

/// Variables by name, as nginx and ingress-nginx spell them.
const VARIABLES: &[(&str, LogVar)] = &[
    ("remote_addr", LogVar::RemoteAddr),
    ("remote_user", LogVar::RemoteUser),
    ("time_local", LogVar::TimeLocal),
    ("time_iso8601", LogVar::TimeIso8601),
    ("msec", LogVar::Msec),
    ("request", LogVar::Request),
    ("request_method", LogVar::RequestMethod),
    ("request_uri", LogVar::RequestUri),
    ("uri", LogVar::Uri),
    ("document_uri", LogVar::Uri),
    ("args", LogVar::Args),
    ("query_string", LogVar::Args),
    ("server_protocol", LogVar::ServerProtocol),
    ("scheme", LogVar::Scheme),
    ("host", LogVar::Host),
    ("status", LogVar::Status),
    ("body_bytes_sent", LogVar::BodyBytesSent),
    ("request_length", LogVar::RequestLength),
    ("request_time", LogVar::RequestTime),
    ("proxy_upstream_name", LogVar::ProxyUpstreamName),
    (
        "proxy_alternative_upstream_name",
        LogVar::ProxyAlternativeUpstreamName,
    ),
    ("upstream_addr", LogVar::UpstreamAddr),
    ("upstream_status", LogVar::UpstreamStatus),
    ("upstream_response_time", LogVar::UpstreamResponseTime),
    ("upstream_response_length", LogVar::UpstreamResponseLength),
    ("req_id", LogVar::RequestId),
    ("request_id", LogVar::RequestId),
    ("namespace", LogVar::Namespace),
    ("ingress_name", LogVar::IngressName),
    ("service_name", LogVar::ServiceName),
    ("service_port", LogVar::ServicePort),
];

/// Longest format accepted: every logged request renders it.
const MAX_FORMAT: usize = 8 << 10;

/// Reads an nginx `log_format` string: `$name` (letters, digits, `_`) or `${name}`.
pub fn parse(format: &str) -> Result<LogFormat, String> {
    if format.len() > MAX_FORMAT {
        return Err(format!("longer than {MAX_FORMAT} bytes"));
    }
    if format.chars().any(|c| c.is_control() && c != '\t') {
        return Err("must not contain control characters".into());
    }
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = format;
    while let Some(at) = rest.find('$') {
        text.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        let (name, after) = if let Some(inner) = rest.strip_prefix('{') {
            let end = inner.find('}').ok_or("a ${ without its }")?;
            (&inner[..end], &inner[end + 1..])
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        if !text.is_empty() {
            parts.push(LogPart::Text(std::mem::take(&mut text)));
        }
        parts.push(LogPart::Var(variable(name)?));
        rest = after;
    }
    text.push_str(rest);
    if !text.is_empty() {
        parts.push(LogPart::Text(text));
    }
    if parts.is_empty() {
        return Err("empty".into());
    }
    Ok(LogFormat { parts })
}

fn variable(name: &str) -> Result<LogVar, String> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!("invalid variable name {name:?}"));
    }
    if let Some(header) = name.strip_prefix("http_").filter(|h| !h.is_empty()) {
        return Ok(LogVar::Header(
            header.to_ascii_lowercase().replace('_', "-"),
        ));
    }
    VARIABLES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.clone())
        .ok_or_else(|| {
            let known: Vec<&str> = VARIABLES.iter().map(|(n, _)| *n).collect();
            format!(
                "variable ${name} is not available (available: ${}, $http_<header>)",
                known.join(", $")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ingress-nginx's default `log-format-upstream`.
    const INGRESS_NGINX_DEFAULT: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" $request_length $request_time [$proxy_upstream_name] [$proxy_alternative_upstream_name] $upstream_addr $upstream_response_length $upstream_response_time $upstream_status $req_id"#;

    #[test]
    fn ingress_nginx_default_format_is_read_whole() {
        let f = parse(INGRESS_NGINX_DEFAULT).expect("default format");
        let vars = f
            .parts
            .iter()
            .filter(|p| matches!(p, LogPart::Var(_)))
            .count();
        assert_eq!(vars, 17);
        assert_eq!(f.parts[0], LogPart::Var(LogVar::RemoteAddr));
        assert_eq!(f.parts[1], LogPart::Text(" - ".into()));
        assert!(f
            .parts
            .contains(&LogPart::Var(LogVar::Header("user-agent".into()))));
    }

    #[test]
    fn braces_json_and_bad_variables() {
        let f = parse(r#"{"t": "${msec}x", "h": "$http_X_Custom_ID"}"#).expect("json");
        assert_eq!(
            f.parts,
            [
                LogPart::Text(r#"{"t": ""#.into()),
                LogPart::Var(LogVar::Msec),
                LogPart::Text(r#"x", "h": ""#.into()),
                LogPart::Var(LogVar::Header("x-custom-id".into())),
                LogPart::Text(r#""}"#.into()),
            ]
        );
        for bad in [
            "$ssl_cipher",
            "$",
            "a $ b",
            "${status",
            "${}",
            "${st-atus}",
            "$http_",
            "",
            "line\nbreak",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let e = parse("$geoip_country_code").expect_err("unknown");
        assert!(
            e.contains("$geoip_country_code") && e.contains("$remote_addr"),
            "{e}"
        );
        assert!(parse(&"x".repeat(MAX_FORMAT + 1)).is_err());
    }
}
