use proptest::prelude::*;

use super::*;

const PS: [f64; 12] = [
    0.0, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1.0,
];

fn hist(values: &[u64]) -> Histogram {
    let mut h = Histogram::new();
    for &v in values {
        h.record(v);
    }
    h
}

/// The true `rank`-th smallest value (1-based) of `sorted`, with the rank `percentile` uses.
fn exact(sorted: &[u64], p: f64) -> u64 {
    let n = sorted.len() as u64;
    let rank = ((p * n as f64).ceil() as u64).clamp(1, n);
    sorted[(rank - 1) as usize]
}

#[test]
fn buckets_partition_all_of_u64() {
    // Exhaustive over the buckets: contiguous, in order, from 0 to u64::MAX, and every bucket's
    // two ends map back to it. So every u64 has exactly one bucket, within range.
    let mut next_low = 0u64;
    for index in 0..BUCKETS {
        let (low, high) = bucket_range(index);
        assert_eq!(low, next_low, "bucket {index}");
        assert!(low <= high);
        assert_eq!(bucket_index(low), index);
        assert_eq!(bucket_index(high), index);
        // No bucket wider than 1/8 of its lower bound (beyond the exact ones).
        if index >= SUB {
            assert!(high - low < low / 8 + 1, "bucket {index}: {low}..={high}");
        }
        if index == BUCKETS - 1 {
            assert_eq!(high, u64::MAX);
        } else {
            next_low = high + 1;
        }
    }
    assert_eq!(bucket_range(BUCKETS), bucket_range(BUCKETS - 1));
    assert_eq!(bucket_range(usize::MAX), (15 << 60, u64::MAX));
}

#[test]
fn bucket_index_edges() {
    for v in [
        0,
        1,
        2,
        7,
        8,
        9,
        15,
        16,
        17,
        1000,
        1 << 32,
        u64::MAX / 2,
        u64::MAX - 1,
        u64::MAX,
    ] {
        let index = bucket_index(v);
        assert!(index < BUCKETS);
        let (low, high) = bucket_range(index);
        assert!(low <= v && v <= high, "{v} not in {low}..={high}");
    }
    for v in 0..SUB as u64 {
        assert_eq!(
            bucket_range(bucket_index(v)),
            (v, v),
            "small values are exact"
        );
    }
    assert_eq!(bucket_index(u64::MAX), BUCKETS - 1);
    for shift in 0..64 {
        let v = 1u64 << shift;
        assert!(bucket_index(v) < BUCKETS);
        assert!(bucket_index(v - 1) < bucket_index(v) || v == 1);
    }
}

#[test]
fn empty() {
    let h = Histogram::<()>::new();
    assert_eq!(h.total(), 0);
    for p in PS {
        assert_eq!(h.percentile(p), 0);
    }
    let zero = PercentileStats {
        samples: 0,
        p0_1: 0,
        p1: 0,
        p5: 0,
        p10: 0,
        p50: 0,
        p90: 0,
        p99: 0,
        p99_9: 0,
    };
    assert_eq!(h.percentile_stats(), zero);
    assert_eq!(h, Histogram::default());
    assert_eq!(
        h.counts.capacity(),
        0,
        "nothing allocated before the first sample"
    );
}

#[test]
fn single_values_are_exact() {
    for v in [0, 1, 2, 7, 8, 1000, 123_456_789, u64::MAX - 1, u64::MAX] {
        let h = hist(&[v]);
        assert_eq!(h.total(), 1);
        for p in PS {
            assert_eq!(h.percentile(p), v, "value {v}, p {p}");
        }
        let s = h.percentile_stats();
        assert_eq!((s.samples, s.p0_1, s.p50, s.p99_9), (1, v, v, v));
    }
}

#[test]
fn small_values_exact_percentiles() {
    // 0..8 each once (exact buckets): every percentile is an exact order statistic.
    let values: Vec<u64> = (0..8).collect();
    let h = hist(&values);
    for p in PS {
        assert_eq!(h.percentile(p), exact(&values, p), "p {p}");
    }
    assert_eq!(h.percentile(0.5), 3);
    assert_eq!(h.percentile(1.0), 7);
}

#[test]
fn record_n_counts_and_saturates() {
    let mut h = Histogram::<()>::new();
    h.record_n(5, 0);
    assert_eq!(h, Histogram::new(), "count 0 records nothing");
    assert_eq!(h.total(), 0);

    h.record_n(0, 3);
    h.record_n(u64::MAX, 2);
    h.record(1);
    assert_eq!(h.total(), 6);
    assert_eq!(h.percentile(0.0), 0);
    assert_eq!(h.percentile(0.5), 0);
    assert_eq!(h.percentile(0.6), 1);
    assert_eq!(h.percentile(1.0), u64::MAX);

    h.record_n(u64::MAX, u64::MAX);
    h.record_n(7, u64::MAX);
    assert_eq!(h.total(), u64::MAX);
    // Beyond u64::MAX samples the counters saturate: answers stay within [min, max] and
    // ordered, but are no longer exact (here the bucket of 7 absorbs the top ranks).
    let got: Vec<u64> = PS.iter().map(|&p| h.percentile(p)).collect();
    assert!(got.windows(2).all(|w| w[0] <= w[1]), "{got:?}");
    assert_eq!(got[0], 0);
    let _ = h.percentile_stats();
    let _ = format!("{h:?}");
}

#[test]
fn odd_percentile_arguments_do_not_panic() {
    let h = hist(&[3, 10, 1_000_000]);
    assert_eq!(h.percentile(f64::NAN), 3);
    assert_eq!(h.percentile(-1.0), 3);
    assert_eq!(h.percentile(f64::NEG_INFINITY), 3);
    assert_eq!(h.percentile(2.0), 1_000_000);
    assert_eq!(h.percentile(f64::INFINITY), 1_000_000);
    assert_eq!(h.percentile(f64::MIN_POSITIVE), 3);
}

#[test]
fn memory_is_bounded() {
    let mut h = Histogram::<()>::new();
    for shift in 0..64 {
        h.record(1u64 << shift);
        h.record((1u64 << shift) | ((1u64 << shift) - 1));
    }
    h.record(u64::MAX);
    assert_eq!(h.counts.len(), BUCKETS);
    assert!(h.counts.capacity() * 8 <= Histogram::<()>::MAX_HEAP_BYTES);
    const { assert!(Histogram::<()>::MAX_HEAP_BYTES <= 4096) };
    assert!(std::mem::size_of::<Histogram>() <= 64);
    // A histogram of small values stays small.
    let small = hist(&[1, 2, 3, 100]);
    assert!(small.counts.len() < 40);
}

#[test]
fn equality_and_clone() {
    let a = hist(&[1, 50, 50, 9000]);
    let b = hist(&[9000, 50, 1, 50]);
    assert_eq!(a, b, "order of recording does not matter");
    assert_eq!(a.clone(), a);
    assert_ne!(a, hist(&[1, 50, 9000]));
    // Same buckets, different extremes.
    assert_ne!(hist(&[1000]), hist(&[1001]));
}

#[test]
fn percentile_stats_fields() {
    // 1..=1000 once each.
    let values: Vec<u64> = (1..=1000).collect();
    let h = hist(&values);
    let s = h.percentile_stats();
    assert_eq!(s.samples, 1000);
    let pairs = [
        (s.p0_1, 1u64),
        (s.p1, 10),
        (s.p5, 50),
        (s.p10, 100),
        (s.p50, 500),
        (s.p90, 900),
        (s.p99, 990),
        (s.p99_9, 999),
    ];
    for (got, want) in pairs {
        assert_eq!(
            bucket_index(got),
            bucket_index(want),
            "got {got}, want about {want}"
        );
        let err = got.abs_diff(want) as f64 / want as f64;
        assert!(err <= 0.125, "got {got}, want about {want}");
    }
    let ordered = [s.p0_1, s.p1, s.p5, s.p10, s.p50, s.p90, s.p99, s.p99_9];
    assert!(ordered.windows(2).all(|w| w[0] <= w[1]));
}

#[test]
fn flush_latency_use() {
    // chunked-wal: a Default histogram per latency, p50/p90/p99 read from percentile_stats.
    #[derive(Debug, Default)]
    struct Latencies {
        write: Histogram,
    }
    let mut l = Latencies::default();
    for us in [100, 2_000, 20_000, 3_000_000] {
        l.write.record(us);
    }
    let s = l.write.percentile_stats();
    assert!(s.p50 > 0 && s.p90 >= s.p50 && s.p99 >= s.p90, "{s}");
    assert_eq!(bucket_index(s.p50), bucket_index(2_000), "{s}");
    assert_eq!(s.p99, 3_000_000, "the largest sample is exact");
    assert!(format!("{l:?}").contains("total: 4"));
}

#[test]
fn percentile_stats_display() {
    let s = PercentileStats {
        samples: 5,
        p0_1: 1,
        p1: 2,
        p5: 3,
        p10: 4,
        p50: 50,
        p90: 90,
        p99: 99,
        p99_9: 100,
    };
    assert_eq!(
        s.to_string(),
        "[samples: 5, P0.1: 1, P1: 2, P5: 3, P10: 4, P50: 50, P90: 90, P99: 99, P99.9: 100]"
    );
}

#[test]
fn debug_output() {
    let h = hist(&[3, 3, 100]);
    let s = format!("{h:?}");
    assert!(s.contains("total: 3"), "{s}");
    assert!(s.contains("\"3..=3\": 2"), "{s}");
    assert!(s.contains("\"96..=103\": 1"), "{s}");
    assert_eq!(
        format!("{:?}", Histogram::<()>::new()),
        "Histogram { total: 0, buckets: {} }"
    );
}

#[test]
fn chart_empty() {
    let chart = AsciiChart::<()>::new();
    assert_eq!(chart.detailed().to_string(), "  (no samples)\n");
    let chart = AsciiChart::<()>::new()
        .add("a", Histogram::new())
        .add("b", Histogram::new());
    assert_eq!(chart.detailed().to_string(), "  (no samples)\n");
}

#[test]
fn chart_rows_and_bars() {
    let mut fast = Histogram::<()>::new();
    let mut slow = Histogram::<()>::new();
    fast.record_n(8, 20);
    fast.record_n(20, 5);
    slow.record_n(700, 10);
    slow.record_n(1500, 2);
    let chart = AsciiChart::new()
        .add("1:fast→x", fast)
        .add("2:slow", slow)
        .add("3:none", Histogram::new());
    let s = chart.detailed().to_string();
    println!("{s}");
    assert!(s.contains("1:fast→x"));
    assert!(s.contains("2:slow"));
    assert!(
        !s.contains("3:none"),
        "series without samples in any row are not drawn"
    );
    assert!(s.contains('█'));
    // Rows from 8..15 up to 1024..2047, gaps included.
    let lines: Vec<&str> = s.lines().collect();
    assert!(lines[0].contains("8..15") && lines[0].contains(&"█".repeat(40)));
    assert!(lines[0].contains(" 20 (80.0%)"));
    assert!(lines
        .last()
        .is_some_and(|l| l.contains("1024..2047") && l.contains(" 2 (16.7%)")));
    assert!(
        s.contains("  64..127 │\n"),
        "empty row in between is shown: {s}"
    );
    assert_eq!(lines.len(), 8, "rows 8..15 through 1024..2047: {s}");
    // Every line has the same column layout.
    let bar_col = lines[0].find('│');
    assert!(lines.iter().all(|l| l.find('│') == bar_col));
}

#[test]
fn chart_extremes() {
    let mut h = Histogram::<()>::new();
    h.record_n(0, u64::MAX);
    h.record_n(u64::MAX, u64::MAX);
    let mut one = Histogram::new();
    one.record(1);
    let s = AsciiChart::new()
        .add("x", h)
        .add("y", one)
        .detailed()
        .to_string();
    assert!(s
        .lines()
        .next()
        .is_some_and(|l| l.trim_start().starts_with("0 │")));
    assert!(s.contains("9223372036854775808..18446744073709551615"));
    // The single sample still gets a visible (eighth) bar next to u64::MAX counts.
    assert!(s.contains("▏ 1 (100.0%)"), "{s}");
    assert_eq!(s.lines().count(), 65);
}

#[test]
fn bar_lengths() {
    assert_eq!(bar(0, 10, 320), "");
    assert_eq!(bar(10, 10, 320), "█".repeat(40));
    assert_eq!(bar(5, 10, 320), "█".repeat(20));
    assert_eq!(bar(1, u64::MAX, 320), "▏");
    assert_eq!(bar(u64::MAX, u64::MAX, 320), "█".repeat(40));
    assert_eq!(bar(3, 16, 8), "▎");
    assert_eq!(
        bar(20, 10, 320),
        "█".repeat(40),
        "never longer than the width"
    );
}

fn check_against_exact(values: Vec<u64>) {
    let h = hist(&values);
    let mut sorted = values.clone();
    sorted.sort_unstable();
    assert_eq!(h.total(), values.len() as u64);
    let (min, max) = (sorted[0], sorted[sorted.len() - 1]);
    assert_eq!(
        h.percentile(0.0),
        min,
        "the lowest rank is the true minimum"
    );
    assert_eq!(
        h.percentile(1.0),
        max,
        "the highest rank is the true maximum"
    );
    let mut previous = 0u64;
    for (i, p) in PS
        .iter()
        .copied()
        .chain((0..=200).map(|i| f64::from(i) / 200.0))
        .enumerate()
    {
        let got = h.percentile(p);
        let want = exact(&sorted, p);
        assert!(
            min <= got && got <= max,
            "p {p}: {got} outside {min}..={max}"
        );
        assert_eq!(
            bucket_index(got),
            bucket_index(want),
            "p {p}: got {got}, exact {want}"
        );
        if i >= PS.len() {
            assert!(got >= previous, "p {p}: {got} < {previous}");
            previous = got;
        }
    }
    let s = h.percentile_stats();
    let ordered = [s.p0_1, s.p1, s.p5, s.p10, s.p50, s.p90, s.p99, s.p99_9];
    assert!(ordered.windows(2).all(|w| w[0] <= w[1]), "{s}");
    assert_eq!(s.samples, values.len() as u64);
}

fn any_magnitude() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..16,
        0u64..5_000,
        any::<u64>(),
        (0u32..64).prop_map(|s| 1u64 << s),
        (0u32..64, any::<u64>()).prop_map(|(s, x)| x >> s),
        Just(u64::MAX),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn percentiles_match_exact_buckets(values in prop::collection::vec(any_magnitude(), 1..300)) {
        check_against_exact(values);
    }

    #[test]
    fn record_n_equals_repeated_record(value in any::<u64>(), n in 0u64..50, other in any::<u64>()) {
        let mut a = Histogram::<()>::new();
        a.record_n(value, n);
        a.record(other);
        let mut b = Histogram::<()>::new();
        for _ in 0..n {
            b.record(value);
        }
        b.record(other);
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(a.total(), n + 1);
    }

    #[test]
    fn percentile_monotone_in_p(
        values in prop::collection::vec((any_magnitude(), 1u64..1_000_000), 1..50),
        ps in prop::collection::vec(any::<f64>(), 1..20),
    ) {
        let mut h = Histogram::<()>::new();
        let mut total = 0u64;
        for &(v, n) in &values {
            h.record_n(v, n);
            total += n;
        }
        prop_assert_eq!(h.total(), total);
        let mut ps: Vec<f64> = ps.into_iter().filter(|p| !p.is_nan()).collect();
        ps.sort_by(f64::total_cmp);
        let got: Vec<u64> = ps.iter().map(|&p| h.percentile(p)).collect();
        prop_assert!(got.windows(2).all(|w| w[0] <= w[1]), "{:?} -> {:?}", ps, got);
        let _ = AsciiChart::new().add("h", h).detailed().to_string();
    }
}
