use super::*;

#[test]
fn sync_progress_shows_bar_bytes_rate_and_eta() {
    let t0 = Instant::now();
    let mut p = SyncProgress::default();
    let first = p.update(t0, 10_000, 100);
    assert!(first.contains("0%"), "{first}");
    assert!(
        first.contains("10000 entries (~976.6 KiB) behind"),
        "{first}"
    );
    assert!(
        first.contains("measuring") && first.contains("ETA unknown"),
        "{first}"
    );
    let mid = p.update(t0 + Duration::from_secs(2), 6_000, 100);
    // 4 000 entries in 2 s: 2 000/s, 6 000 left: 3 s.
    assert!(mid.contains("40%"), "{mid}");
    assert!(
        mid.contains("2000 entries/s") && mid.contains("ETA 3 s"),
        "{mid}"
    );
    assert!(
        mid.contains(&format!("[{}{}]", "#".repeat(12), ".".repeat(18))),
        "{mid}"
    );
    let done = p.update(t0 + Duration::from_secs(3), 0, 100);
    assert!(done.contains("100%") && done.contains("ETA 0 s"), "{done}");
}

#[test]
fn sync_progress_in_service_bytes_shows_bytes_rate_and_eta() {
    let t0 = Instant::now();
    let mut p = SyncProgress::default();
    let first = p.update_lag(t0, Lag::ServiceBytes(8 << 20));
    assert!(first.contains("service data 8.0 MiB behind"), "{first}");
    let mid = p.update_lag(t0 + Duration::from_secs(2), Lag::ServiceBytes(4 << 20));
    // 4 MiB in 2 s: 2 MiB/s, 4 MiB left: 2 s.
    assert!(
        mid.contains("50%") && mid.contains("2.0 MiB/s") && mid.contains("ETA 2 s"),
        "{mid}"
    );
    assert!(!mid.contains("entries"), "{mid}");
}

#[test]
fn sync_progress_rate_forgets_old_samples() {
    let t0 = Instant::now();
    let mut p = SyncProgress::default();
    p.update(t0, 1_000, 10);
    // Stalled for longer than the window: the rate is unknown again, not a stale average.
    let later = t0 + SyncProgress::RATE_WINDOW * 2;
    p.update(later, 900, 10);
    let line = p.update(later + Duration::from_millis(500), 900, 10);
    assert!(line.contains("ETA unknown"), "{line}");
}

#[test]
fn rfc3339_roundtrips_through_the_formatter() {
    let ms = parse_rfc3339_ms("2026-11-22T03:04:05.250Z").unwrap();
    assert_eq!(format_unix_ms(ms), "2026-11-22 03:04:05.250");
    assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z").unwrap(), 0);
    assert_eq!(
        parse_rfc3339_ms("2026-11-22T04:04:05+01:00").unwrap(),
        parse_rfc3339_ms("2026-11-22T03:04:05Z").unwrap()
    );
    assert!(parse_rfc3339_ms("2026-11-22T03:04:05").is_err());
    assert!(parse_rfc3339_ms("tomorrow").is_err());
    assert_eq!(
        parse_rfc3339_ms("2026-11-22t03:04:05.123456789-00:30").unwrap(),
        parse_rfc3339_ms("2026-11-22T03:34:05.123Z").unwrap()
    );
    assert_eq!(
        parse_rfc3339_ms("2024-02-29 00:00:00.5Z").unwrap(),
        parse_rfc3339_ms("2024-02-29T00:00:00Z").unwrap() + 500
    );
}

/// Issue 13: `NaN` seconds, negative hours and other values a float or signed parse lets
/// through are refused, each with a reason and an example of what to write.
#[test]
fn rfc3339_refuses_nan_negative_and_out_of_range_fields() {
    for bad in [
        "2026-11-22T03:04:NaNZ",
        "2026-11-22T03:04:nanZ",
        "2026-11-22T03:04:infZ",
        "2026-11-22T03:04:1e1Z",
        "2026-11-22T03:04:-5Z",
        "2026-11-22T03:04:+5Z",
        "2026-11-22T-1:04:05Z",
        "2026-11-22T-01:04:05Z",
        "2026-11-22T03:-4:05Z",
        "2026-11--2T03:04:05Z",
        "-026-11-22T03:04:05Z",
        "2026-11-22T24:00:00Z",
        "2026-11-22T03:60:00Z",
        "2026-11-22T03:04:60Z",
        "2026-02-29T03:04:05Z",
        "2026-04-31T03:04:05Z",
        "2026-13-01T03:04:05Z",
        "2026-00-01T03:04:05Z",
        "2026-11-00T03:04:05Z",
        "2026-11-22T03:04:05.Z",
        "2026-11-22T03:04:05.1234567890Z",
        "2026-11-22T03:04:05+24:00",
        "2026-11-22T03:04:05+01:60",
        "2026-11-22T03:04:05+-1:00",
        "2026-11-22T03:04:05+1:00",
        "2026-11-22T03:04:05+01:00x",
        "2026-11-22T03:04:05Zjunk",
        "2026-11-22T3:04:05Z",
        "2026-11-22T03:04Z",
        "２026-11-22T03:04:05Z",
        "",
    ] {
        let e = parse_rfc3339_ms(bad).expect_err(bad);
        let text = e.to_string();
        assert!(matches!(e, TimeError::Malformed { .. }), "{bad:?}: {text}");
        assert!(text.contains("2026-11-22T03:00:00Z"), "{bad:?}: {text}");
    }
    assert!(matches!(
        parse_rfc3339_ms("2026-11-22T03:04:05.5"),
        Err(TimeError::NoZone { .. })
    ));
    assert!(matches!(
        parse_rfc3339_ms("1969-12-31T23:59:59Z"),
        Err(TimeError::BeforeEpoch { .. })
    ));
    assert!(matches!(
        parse_rfc3339_ms("1970-01-01T00:30:00+01:00"),
        Err(TimeError::BeforeEpoch { .. })
    ));
    assert!(parse_rfc3339_ms(&"9".repeat(200)).is_err());
}

/// Issue 13: a time in the past (or now) is refused before anything is sent, saying what
/// to give instead; a future time passes.
#[test]
fn at_in_the_past_is_refused_with_the_reason() {
    let now = parse_rfc3339_ms("2026-11-22T03:00:00Z").unwrap();
    let e = parse_at("2026-11-22T02:59:59.999Z", now).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, TimeError::InPast { .. }), "{text}");
    assert!(
        text.contains("in the past")
            && text.contains("2026-11-22 03:00:00.000")
            && text.contains("leave out --at"),
        "{text}"
    );
    assert!(matches!(
        parse_at("2026-11-22T03:00:00Z", now),
        Err(TimeError::InPast { .. })
    ));
    assert!(matches!(
        parse_at("2026-11-22T04:00:00+01:00", now),
        Err(TimeError::InPast { .. })
    ));
    assert_eq!(parse_at("2026-11-22T03:00:00.001Z", now), Ok(now + 1));
    assert!(matches!(
        parse_at("2026-11-22T03:00:NaNZ", now),
        Err(TimeError::Malformed { .. })
    ));
}

fn history_of(events: &[serde_json::Value]) -> serde_json::Value {
    serde_json::json!({
        "entries": events
            .iter()
            .enumerate()
            .map(|(i, e)| serde_json::json!({"seq": i, "at_unix_ms": 0, "term": 1, "event": e}))
            .collect::<Vec<_>>()
    })
}

#[test]
fn an_undone_failback_is_not_a_success_and_says_why() {
    let h = history_of(&[
        serde_json::json!({"operation_started": {"id": 7, "kind": "failback", "from": 2, "to": 1}}),
        serde_json::json!({"operation_step": {"id": 7, "kind": "failback", "reason": "the verify action failed on home node 1"}}),
        serde_json::json!({"operation_ended": {"id": 7, "kind": "failback", "outcome": "undone"}}),
    ]);
    let end = operation_end(&h, None).expect("the end of operation 7");
    assert_eq!(end.outcome, "undone");
    assert!(!end.succeeded);
    assert_eq!(
        end.reason.as_deref(),
        Some("the verify action failed on home node 1")
    );
    assert_eq!(operation_end(&h, Some(7)), Some(end));
    assert_eq!(operation_end(&h, Some(8)), None, "another operation");
}

#[test]
fn aborted_committed_and_unfinished_operations() {
    let aborted = history_of(&[
        serde_json::json!({"operation_started": {"id": 3}}),
        serde_json::json!({"operation_ended": {"id": 3, "outcome": {"aborted": {"reason": "the protective snapshot failed"}}}}),
    ]);
    let end = operation_end(&aborted, None).expect("aborted");
    assert_eq!(
        (end.outcome.as_str(), end.succeeded, end.reason.as_deref()),
        ("aborted", false, Some("the protective snapshot failed"))
    );
    let committed = history_of(&[
        serde_json::json!({"operation_started": {"id": 4}}),
        serde_json::json!({"operation_ended": {"id": 4, "outcome": "committed"}}),
    ]);
    assert!(
        operation_end(&committed, None)
            .expect("committed")
            .succeeded
    );
    let running = history_of(&[serde_json::json!({"operation_started": {"id": 5}})]);
    assert_eq!(operation_end(&running, None), None);
    assert_eq!(operation_end(&serde_json::json!({}), None), None);
}

#[test]
fn a_data_record_reads_as_one_sentence() {
    let e = serde_json::json!({"operation_data": {"id": 4, "node": 2, "action": "verify", "ok": false, "duration_ms": 310, "detail": "table \"public\".\"t\" differs"}});
    assert_eq!(
        describe_event(&e),
        "operation 4: verify on node 2 FAILED in 310 ms: table \\\"public\\\".\\\"t\\\" differs"
    );
}
