//! The monitor's service report: a monitor may print one JSON object as the last line of its
//! output, saying what the service knows about its own data:
//!
//! ```text
//! {"role": "replica", "position": 50331744, "timeline": 1, "healthy": true, "detail": "streaming"}
//! ```
//!
//! Every field is optional; the exit status still decides pass or fail. A last line that does
//! not start with `{` is no report (the monitor says nothing about data, and quorate decides by
//! its own log as before). A last line that starts with `{` but is not a valid report is an
//! error naming the problem, logged by the monitor loop; it never fails the check by itself.
//!
//! Pure: a function of the hook's captured output.

use serde::Deserialize;

use crate::types::{ServiceReport, ServiceRole};

/// Longest `detail` kept (characters); the rest is cut with an ellipsis. The detail goes to
/// status and logs, never into heartbeats.
pub const MAX_DETAIL_CHARS: usize = 256;

/// Longest report line accepted (bytes). A report is a few dozen bytes; a longer line is a
/// monitor printing something else that happens to start with `{`.
pub const MAX_REPORT_LINE_BYTES: usize = 4096;

/// A monitor's report as parsed.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ParsedReport {
    pub report: ServiceReport,
    /// Free text for operators, at most [`MAX_DETAIL_CHARS`].
    pub detail: Option<String>,
    /// Set by the monitor loop, never by the parse: the run that printed this report started
    /// after this node lost the primary of this epoch (or a later one), so the position is
    /// final for that primary ([`super::monitor::MonitorHandle::refresh_after_loss`]).
    pub after_primary_loss: Option<crate::types::Epoch>,
}

/// Why the last line of a monitor's output is not a usable report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error(
        "the monitor's report line is {len} bytes, more than {MAX_REPORT_LINE_BYTES}; print one \
         short JSON object such as {{\"role\":\"replica\",\"position\":1234,\"timeline\":1}} as the last line"
    )]
    TooLong { len: usize },
    #[error(
        "the monitor's last output line starts with '{{' but is not a valid service report ({reason}); \
         the fields are role (\"primary\", \"replica\" or \"stopped\"), position and timeline \
         (non-negative integers), healthy (true/false) and detail (text), all optional"
    )]
    Invalid { reason: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReport {
    role: Option<ServiceRole>,
    position: Option<u64>,
    timeline: Option<u64>,
    healthy: Option<bool>,
    detail: Option<String>,
}

/// The report in a monitor's `output`: `Ok(None)` when its last non-empty line is not a JSON
/// object (no report).
pub fn parse_report(output: &str) -> Result<Option<ParsedReport>, ReportError> {
    let Some(line) = output.lines().map(str::trim).rfind(|l| !l.is_empty()) else {
        return Ok(None);
    };
    if !line.starts_with('{') {
        return Ok(None);
    }
    if line.len() > MAX_REPORT_LINE_BYTES {
        return Err(ReportError::TooLong { len: line.len() });
    }
    let raw: RawReport = serde_json::from_str(line).map_err(|e| ReportError::Invalid {
        reason: e.to_string(),
    })?;
    Ok(Some(ParsedReport {
        report: ServiceReport {
            role: raw.role,
            position: raw.position,
            timeline: raw.timeline,
            healthy: raw.healthy,
        },
        detail: raw.detail.map(|d| bounded_detail(&d)),
        after_primary_loss: None,
    }))
}

fn bounded_detail(d: &str) -> String {
    if d.chars().count() <= MAX_DETAIL_CHARS {
        return d.to_string();
    }
    let mut out: String = d.chars().take(MAX_DETAIL_CHARS - 1).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_full_report_on_the_last_line_is_read() {
        let out = "checking\nstill fine\n{\"role\":\"replica\",\"position\":50331744,\"timeline\":2,\"healthy\":true,\"detail\":\"streaming\"}\n";
        let p = parse_report(out).unwrap().unwrap();
        assert_eq!(
            p.report,
            ServiceReport {
                role: Some(ServiceRole::Replica),
                position: Some(50_331_744),
                timeline: Some(2),
                healthy: Some(true),
            }
        );
        assert_eq!(p.detail.as_deref(), Some("streaming"));
    }

    #[test]
    fn every_field_is_optional() {
        let p = parse_report("{}").unwrap().unwrap();
        assert_eq!(p.report, ServiceReport::default());
        let p = parse_report("  {\"position\": 7}  \n\n").unwrap().unwrap();
        assert_eq!(p.report.position, Some(7));
        assert_eq!(p.report.role, None);
    }

    #[test]
    fn output_without_a_json_last_line_is_no_report() {
        assert_eq!(parse_report(""), Ok(None));
        assert_eq!(parse_report("ok\n"), Ok(None));
        assert_eq!(parse_report("{\"position\":1}\nall good\n"), Ok(None));
    }

    #[test]
    fn a_broken_report_is_an_error_that_names_the_fields() {
        for bad in [
            "{\"role\":\"leader\"}",
            "{\"position\":-1}",
            "{\"postion\":5}",
            "{\"position\":",
            "{\"healthy\":\"yes\"}",
        ] {
            let e = parse_report(bad).unwrap_err();
            assert!(e.to_string().contains("role"), "{bad}: {e}");
        }
    }

    #[test]
    fn an_overlong_report_line_is_refused() {
        let line = format!("{{\"detail\":\"{}\"}}", "x".repeat(MAX_REPORT_LINE_BYTES));
        assert!(matches!(
            parse_report(&line),
            Err(ReportError::TooLong { .. })
        ));
    }

    #[test]
    fn a_long_detail_is_cut() {
        let line = format!("{{\"detail\":\"{}\"}}", "é".repeat(MAX_DETAIL_CHARS * 2));
        let p = parse_report(&line).unwrap().unwrap();
        assert_eq!(p.detail.unwrap().chars().count(), MAX_DETAIL_CHARS);
    }

    proptest! {
        #[test]
        fn any_output_parses_or_errs_without_panicking(s in ".{0,300}") {
            let _ = parse_report(&s);
        }

        #[test]
        fn a_printed_report_reads_back(
            position in proptest::option::of(any::<u64>()),
            timeline in proptest::option::of(any::<u64>()),
            healthy in proptest::option::of(any::<bool>()),
        ) {
            let mut m = serde_json::Map::new();
            if let Some(p) = position { m.insert("position".into(), p.into()); }
            if let Some(t) = timeline { m.insert("timeline".into(), t.into()); }
            if let Some(h) = healthy { m.insert("healthy".into(), h.into()); }
            let line = serde_json::Value::Object(m).to_string();
            let p = parse_report(&format!("log line\n{line}\n")).unwrap().unwrap();
            prop_assert_eq!(p.report.position, position);
            prop_assert_eq!(p.report.timeline, timeline);
            prop_assert_eq!(p.report.healthy, healthy);
        }
    }
}
