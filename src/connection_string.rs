//! Application Insights connection strings: `Key=Value` pairs separated by `;`, keys
//! case-insensitive, `InstrumentationKey` required (as the Azure Monitor exporters parse them).

use std::collections::BTreeMap;

/// Why a connection string was refused. Messages never echo the string: it is a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionStringError {
    #[error("the connection string is empty")]
    Empty,
    #[error("part {index} of the connection string is not Key=Value")]
    MalformedPart { index: usize },
    #[error("the connection string has no InstrumentationKey")]
    MissingInstrumentationKey,
    #[error("the InstrumentationKey is not a GUID")]
    InvalidInstrumentationKey,
    #[error("{key} is not an http(s) URL with a host")]
    InvalidEndpoint { key: &'static str },
}

/// A parsed, validated connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionString {
    /// Keys lowercased.
    parts: BTreeMap<String, String>,
}

const URL_KEYS: [(&str, &str); 2] = [
    ("ingestionendpoint", "IngestionEndpoint"),
    ("liveendpoint", "LiveEndpoint"),
];

impl ConnectionString {
    pub fn parse(raw: &str) -> Result<Self, ConnectionStringError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(ConnectionStringError::Empty);
        }
        let mut parts = BTreeMap::new();
        for (index, part) in raw.split(';').enumerate() {
            let part = part.trim();
            if part.is_empty() {
                continue; // a trailing ';' is common and harmless
            }
            let (key, value) = part
                .split_once('=')
                .filter(|(k, v)| !k.trim().is_empty() && !v.trim().is_empty())
                .ok_or(ConnectionStringError::MalformedPart { index: index + 1 })?;
            parts.insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
        let ikey = parts
            .get("instrumentationkey")
            .ok_or(ConnectionStringError::MissingInstrumentationKey)?;
        if !is_guid(ikey) {
            return Err(ConnectionStringError::InvalidInstrumentationKey);
        }
        for (key, name) in URL_KEYS {
            if let Some(url) = parts.get(key)
                && !is_http_url(url)
            {
                return Err(ConnectionStringError::InvalidEndpoint { key: name });
            }
        }
        Ok(ConnectionString { parts })
    }

    pub fn instrumentation_key(&self) -> &str {
        self.parts
            .get("instrumentationkey")
            .map(String::as_str)
            .unwrap_or_default()
    }

    pub fn ingestion_endpoint(&self) -> Option<&str> {
        self.parts.get("ingestionendpoint").map(String::as_str)
    }
}

fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn is_http_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    matches!(rest, Some(r) if r.split('/').next().is_some_and(|host| !host.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const IKEY: &str = "00000000-0000-0000-0000-0000000000a1";

    #[test]
    fn parses_the_documented_shape_case_insensitively() {
        let cs = ConnectionString::parse(&format!(
            "instrumentationkey={IKEY};IngestionEndpoint=https://westeurope-5.in.applicationinsights.azure.com/;LiveEndpoint=https://westeurope.livediagnostics.monitor.azure.com/;ApplicationId=abc;"
        ))
        .unwrap();
        assert_eq!(cs.instrumentation_key(), IKEY);
        assert_eq!(
            cs.ingestion_endpoint(),
            Some("https://westeurope-5.in.applicationinsights.azure.com/")
        );
    }

    #[test]
    fn older_strings_with_only_the_key_are_valid() {
        assert!(ConnectionString::parse(&format!("InstrumentationKey={IKEY}")).is_ok());
    }

    #[test]
    fn refuses_malformed_strings_without_echoing_them() {
        use ConnectionStringError::*;
        let cases = [
            ("", Empty),
            ("   ", Empty),
            ("IngestionEndpoint=https://x/", MissingInstrumentationKey),
            ("InstrumentationKey=not-a-guid", InvalidInstrumentationKey),
            ("InstrumentationKey", MalformedPart { index: 1 }),
            (
                &*format!("InstrumentationKey={IKEY};=x"),
                MalformedPart { index: 2 },
            ),
            (
                &*format!("InstrumentationKey={IKEY};IngestionEndpoint=ftp://x"),
                InvalidEndpoint {
                    key: "IngestionEndpoint",
                },
            ),
            (
                &*format!("InstrumentationKey={IKEY};IngestionEndpoint=https://"),
                InvalidEndpoint {
                    key: "IngestionEndpoint",
                },
            ),
        ];
        for (raw, want) in cases {
            let err = ConnectionString::parse(raw).unwrap_err();
            assert_eq!(err, want, "{raw:?}");
            assert!(!err.to_string().contains(IKEY));
        }
    }
}
