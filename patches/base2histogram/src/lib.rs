//! A small log-bucketed histogram that stands in for `base2histogram` 0.2.3 in quorate's build.
//!
//! openraft 0.10.0-alpha.37 keeps a dozen histograms in every Raft instance (batch sizes,
//! budgets, per-stage latencies), and chunked-wal (under raft-log) a few flush-latency ones. The
//! crates.io crate builds a lookup table on first use that stays resident (about 26 MiB per
//! process). This crate provides only the items those two crates call, with the bucket of a value
//! computed from its bit length, so a histogram costs at most [`Histogram::MAX_HEAP_BYTES`] of
//! heap, allocated on the first recorded value.
//!
//! Provided: [`Histogram`] (`new`, `Default`, `record`, `record_n`, `total`, `percentile`,
//! `percentile_stats`, `Clone`, `Debug`, `PartialEq`/`Eq`), [`PercentileStats`] (public fields,
//! `Display`) and [`AsciiChart`] (`new`, `add`, `detailed`).
//!
//! # Buckets
//!
//! Values `0..8` each have their own bucket (exact). Every larger power-of-two range
//! `[2^k, 2^(k+1))` (k = 3..=63) is split into 8 equal sub-buckets, so a bucket is never wider
//! than 1/8 of its lower bound: a percentile estimate is off by at most 12.5 % of the true value.
//! 496 buckets cover every `u64`. The exact minimum and maximum are kept as well, so a histogram
//! of one distinct value reports it exactly.
//!
//! # The type parameter
//!
//! `Histogram<T>` and `AsciiChart<T>` keep the upstream crate's type parameter (a user payload
//! per sliding-window slot there) so that openraft's `Histogram::<()>::new()` still compiles.
//! openraft only ever uses `()`; this crate has no sliding window and stores no `T`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;
use std::marker::PhantomData;

/// log2 of the number of sub-buckets per power of two.
const SUB_BITS: u32 = 3;
/// Sub-buckets per power of two; also the number of exact small-value buckets (`0..SUB`).
const SUB: usize = 1 << SUB_BITS;
/// Buckets needed for every `u64`: one group of exact values, then one group per bit length
/// from `SUB_BITS + 1` to 64.
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB;

// "A few KiB at most" per histogram, checked at compile time.
const _: () = assert!(BUCKETS * std::mem::size_of::<u64>() <= 4096);

/// The bucket holding `value`; always `< BUCKETS`.
fn bucket_index(value: u64) -> usize {
    if value < SUB as u64 {
        return value as usize;
    }
    // value >= 8, so its highest set bit is at position 3..=63.
    let msb = 63 - value.leading_zeros();
    let shift = msb - SUB_BITS;
    // The SUB_BITS bits just below the highest set bit select the sub-bucket.
    let sub = ((value >> shift) as usize) & (SUB - 1);
    (shift as usize + 1) * SUB + sub
}

/// Inclusive `(low, high)` value range of bucket `index` (indexes past the end are clamped).
fn bucket_range(index: usize) -> (u64, u64) {
    let index = index.min(BUCKETS - 1);
    if index < SUB {
        return (index as u64, index as u64);
    }
    // index / SUB is 1..=61, so shift is 0..=60 and low + width fits: the last bucket ends at
    // 15 * 2^60 + 2^60 - 1 = u64::MAX.
    let shift = (index / SUB - 1) as u32;
    let sub = (index % SUB) as u64;
    let low = (SUB as u64 + sub) << shift;
    let width = (1u64 << shift) - 1;
    (low, low + width)
}

/// Distribution of `u64` samples in logarithmic buckets (see the crate documentation).
///
/// Memory: a few machine words, plus one `u64` counter per bucket up to the bucket of the
/// largest value recorded so far (at most [`Histogram::MAX_HEAP_BYTES`]).
pub struct Histogram<T = ()> {
    /// Sample count per bucket, indexed by [`bucket_index`]. Empty until the first sample; then
    /// exactly as long as needed for the largest bucket in use (never longer than `BUCKETS`).
    counts: Vec<u64>,
    /// Number of samples (saturates at `u64::MAX`).
    total: u64,
    /// Smallest and largest sample; meaningful only when `total > 0`.
    min: u64,
    max: u64,
    _payload: PhantomData<fn() -> T>,
}

impl<T> Histogram<T> {
    /// Upper bound of the heap memory one histogram uses, in bytes.
    pub const MAX_HEAP_BYTES: usize = BUCKETS * std::mem::size_of::<u64>();

    /// An empty histogram. Allocates nothing until the first sample.
    pub fn new() -> Self {
        Histogram {
            counts: Vec::new(),
            total: 0,
            min: 0,
            max: 0,
            _payload: PhantomData,
        }
    }

    /// Records one sample of `value`.
    pub fn record(&mut self, value: u64) {
        self.record_n(value, 1);
    }

    /// Records `count` samples of `value` (nothing if `count` is 0). Counters saturate at
    /// `u64::MAX` instead of overflowing.
    pub fn record_n(&mut self, value: u64, count: u64) {
        if count == 0 {
            return;
        }
        let index = bucket_index(value);
        if self.counts.len() <= index {
            let extra = index + 1 - self.counts.len();
            self.counts.reserve_exact(extra);
            self.counts.resize(index + 1, 0);
        }
        if let Some(c) = self.counts.get_mut(index) {
            *c = c.saturating_add(count);
        }
        if self.total == 0 {
            self.min = value;
            self.max = value;
        } else {
            self.min = self.min.min(value);
            self.max = self.max.max(value);
        }
        self.total = self.total.saturating_add(count);
    }

    /// Number of samples recorded.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Estimated value below or at which the fraction `p` (0.0..=1.0, e.g. 0.99) of the samples
    /// lie. 0 for an empty histogram. `p` outside 0..=1 is clamped, NaN counts as 0.
    ///
    /// The estimate lies in the same bucket as the true sample of that rank and within the
    /// recorded minimum and maximum; it never decreases as `p` grows.
    pub fn percentile(&self, p: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
        // The rank (1-based) of the sample sought: the smallest r with r / total >= p.
        // `as` saturates on float-to-int conversion, and the clamp keeps r in 1..=total.
        let rank = ((p * self.total as f64).ceil() as u64).clamp(1, self.total);
        self.value_at_rank(rank)
    }

    /// The percentiles openraft reports, with the sample count.
    pub fn percentile_stats(&self) -> PercentileStats {
        PercentileStats {
            samples: self.total,
            p0_1: self.percentile(0.001),
            p1: self.percentile(0.01),
            p5: self.percentile(0.05),
            p10: self.percentile(0.1),
            p50: self.percentile(0.5),
            p90: self.percentile(0.9),
            p99: self.percentile(0.99),
            p99_9: self.percentile(0.999),
        }
    }

    /// Estimate of the `rank`-th smallest sample (1-based, `rank <= total`).
    fn value_at_rank(&self, rank: u64) -> u64 {
        let mut below: u64 = 0;
        for (index, &count) in self.counts.iter().enumerate() {
            if count == 0 {
                continue;
            }
            let through = below.saturating_add(count);
            if through >= rank {
                return self.interpolate(index, rank.saturating_sub(below), count);
            }
            below = through;
        }
        // Only reachable when per-bucket counters saturated; the largest sample is the answer.
        self.max
    }

    /// Position of the `nth` (1-based) of `count` samples in bucket `index`, assuming they are
    /// spread evenly over the part of the bucket within [min, max]. Where the bucket holds the
    /// minimum (maximum), its first (last) sample is known to be exactly that, so the
    /// histogram's lowest rank reports the true minimum and its highest rank the true maximum.
    fn interpolate(&self, index: usize, nth: u64, count: u64) -> u64 {
        let (low, high) = bucket_range(index);
        let holds_min = low <= self.min;
        let holds_max = high >= self.max;
        let low = low.max(self.min);
        let high = high.min(self.max);
        if high <= low {
            return low;
        }
        // Samples sit at the middles of `count` equal slices of [low, high], except that a
        // known end sample sits on that end. In half-slot units: sample n (1-based) is at
        // 2(n-1) + first of a span of 2(count-1) + first + last.
        let first = u128::from(!holds_min);
        let last = u128::from(!holds_max);
        let mut num = 2 * u128::from(nth.saturating_sub(1)) + first;
        let mut den = 2 * u128::from(count.saturating_sub(1)) + first + last;
        // Keep `width * num` within u128 (width < 2^64): scale both below 2^63.
        let excess = (128 - den.leading_zeros()).saturating_sub(63);
        num >>= excess;
        den >>= excess;
        if den == 0 {
            return low;
        }
        let offset = u128::from(high - low) * num.min(den) / den;
        low.saturating_add(u64::try_from(offset).unwrap_or(u64::MAX))
            .min(high)
    }

    /// Non-empty buckets as `(low, high, count)`, low to high.
    fn buckets(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, &count)| count > 0)
            .map(|(index, &count)| {
                let (low, high) = bucket_range(index);
                (low, high, count)
            })
    }

    /// Bucket counters without trailing empty buckets (for comparisons).
    fn used_counts(&self) -> &[u64] {
        let used = self
            .counts
            .iter()
            .rposition(|&count| count > 0)
            .map_or(0, |last| last + 1);
        self.counts.get(..used).unwrap_or(&[])
    }
}

impl<T> Default for Histogram<T> {
    fn default() -> Self {
        Self::new()
    }
}

// Written by hand rather than derived so that none of them requires anything of `T`.

impl<T> Clone for Histogram<T> {
    fn clone(&self) -> Self {
        Histogram {
            counts: self.counts.clone(),
            total: self.total,
            min: self.min,
            max: self.max,
            _payload: PhantomData,
        }
    }
}

impl<T> PartialEq for Histogram<T> {
    fn eq(&self, other: &Self) -> bool {
        self.total == other.total
            && (self.total == 0 || (self.min == other.min && self.max == other.max))
            && self.used_counts() == other.used_counts()
    }
}

impl<T> Eq for Histogram<T> {}

impl<T> fmt::Debug for Histogram<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Buckets<'a, T>(&'a Histogram<T>);
        impl<T> fmt::Debug for Buckets<'_, T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map()
                    .entries(
                        self.0
                            .buckets()
                            .map(|(low, high, count)| (format!("{low}..={high}"), count)),
                    )
                    .finish()
            }
        }
        let mut s = f.debug_struct("Histogram");
        s.field("total", &self.total);
        if self.total > 0 {
            s.field("min", &self.min).field("max", &self.max);
        }
        s.field("buckets", &Buckets(self)).finish()
    }
}

/// Sample count and selected percentiles of a [`Histogram`]; all 0 for an empty one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PercentileStats {
    /// Number of samples.
    pub samples: u64,
    /// 0.1th percentile.
    pub p0_1: u64,
    /// 1st percentile.
    pub p1: u64,
    /// 5th percentile.
    pub p5: u64,
    /// 10th percentile.
    pub p10: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p99_9: u64,
}

impl fmt::Display for PercentileStats {
    /// `[samples: N, P0.1: a, P1: b, P5: c, P10: d, P50: e, P90: f, P99: g, P99.9: h]`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[samples: {}, P0.1: {}, P1: {}, P5: {}, P10: {}, P50: {}, P90: {}, P99: {}, P99.9: {}]",
            self.samples,
            self.p0_1,
            self.p1,
            self.p5,
            self.p10,
            self.p50,
            self.p90,
            self.p99,
            self.p99_9
        )
    }
}

/// Several named histograms drawn side by side as text bar charts, one row per power of two.
pub struct AsciiChart<T = ()> {
    series: Vec<(String, Histogram<T>)>,
}

impl<T> AsciiChart<T> {
    /// Bar length, in characters, of the largest count in the chart.
    const BAR_WIDTH: u64 = 40;

    /// A chart with no series.
    pub fn new() -> Self {
        AsciiChart { series: Vec::new() }
    }

    /// Appends a series named `name`.
    pub fn add(mut self, name: &str, histogram: Histogram<T>) -> Self {
        self.series.push((name.to_string(), histogram));
        self
    }

    /// Displays the chart: for each power-of-two value range from the lowest to the highest one
    /// holding samples, one line per series with samples there (bar, count, share of that
    /// series' samples).
    pub fn detailed(&self) -> DetailedDisplay<'_, T> {
        DetailedDisplay { chart: self }
    }
}

impl<T> Default for AsciiChart<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for AsciiChart<T> {
    fn clone(&self) -> Self {
        AsciiChart {
            series: self.series.clone(),
        }
    }
}

impl<T> fmt::Debug for AsciiChart<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsciiChart")
            .field("series", &self.series)
            .finish()
    }
}

/// Chart rows: row 0 holds the value 0, row r (1..=64) the values `[2^(r-1), 2^r - 1]`.
const ROWS: usize = 65;

/// The chart row of a bucket whose lowest value is `low`.
fn row_of(low: u64) -> usize {
    // 0 -> 0; otherwise the bit length of `low`, and a bucket never spans two powers of two.
    (64 - low.leading_zeros()) as usize
}

/// Inclusive value range of chart row `row` (clamped to the last row).
fn row_range(row: usize) -> (u64, u64) {
    match row.min(ROWS - 1) {
        0 => (0, 0),
        64 => (1 << 63, u64::MAX),
        r => (1 << (r - 1), (1 << r) - 1),
    }
}

/// [`fmt::Display`] of an [`AsciiChart`], from [`AsciiChart::detailed`].
pub struct DetailedDisplay<'a, T = ()> {
    chart: &'a AsciiChart<T>,
}

impl<T> fmt::Display for DetailedDisplay<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let series = &self.chart.series;
        // Per series: sample count per chart row.
        let rows: Vec<[u64; ROWS]> = series
            .iter()
            .map(|(_, h)| {
                let mut per_row = [0u64; ROWS];
                for (low, _, count) in h.buckets() {
                    if let Some(slot) = per_row.get_mut(row_of(low)) {
                        *slot = slot.saturating_add(count);
                    }
                }
                per_row
            })
            .collect();

        let used = |row: usize| rows.iter().any(|r| r.get(row).is_some_and(|&c| c > 0));
        let (Some(first), Some(last)) =
            ((0..ROWS).find(|&r| used(r)), (0..ROWS).rfind(|&r| used(r)))
        else {
            return writeln!(f, "  (no samples)");
        };
        let largest = rows.iter().flatten().copied().max().unwrap_or(0).max(1);

        let label = |row: usize| {
            let (low, high) = row_range(row);
            if low == high {
                format!("{low}")
            } else {
                format!("{low}..{high}")
            }
        };
        let label_width = (first..=last).map(|r| label(r).len()).max().unwrap_or(0);
        let name_width = series
            .iter()
            .map(|(name, _)| name.chars().count())
            .max()
            .unwrap_or(0);

        for row in first..=last {
            let mut shown = false;
            for ((name, histogram), per_row) in series.iter().zip(&rows) {
                let count = per_row.get(row).copied().unwrap_or(0);
                if count == 0 {
                    continue;
                }
                let row_label = if shown { String::new() } else { label(row) };
                shown = true;
                let share = count as f64 * 100.0 / histogram.total().max(1) as f64;
                writeln!(
                    f,
                    "  {row_label:>label_width$} │ {name:<name_width$} │ {bar} {count} ({share:.1}%)",
                    bar = bar(count, largest, Self::bar_eighths()),
                )?;
            }
            if !shown {
                writeln!(f, "  {:>label_width$} │", label(row))?;
            }
        }
        Ok(())
    }
}

impl<T> DetailedDisplay<'_, T> {
    fn bar_eighths() -> u64 {
        AsciiChart::<T>::BAR_WIDTH * 8
    }
}

/// A bar of `count / largest` of `eighths` eighth-characters, at least one eighth when
/// `count > 0`.
fn bar(count: u64, largest: u64, eighths: u64) -> String {
    const PARTIAL: [char; 8] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];
    if count == 0 || largest == 0 {
        return String::new();
    }
    // Rounded up; u128 so that `count * eighths` cannot overflow.
    let len = (u128::from(count) * u128::from(eighths)).div_ceil(u128::from(largest));
    let len = u64::try_from(len).unwrap_or(eighths).min(eighths);
    let mut s = "█".repeat((len / 8) as usize);
    if let Some(&c) = PARTIAL.get((len % 8) as usize) {
        if c != ' ' {
            s.push(c);
        }
    }
    s
}

#[cfg(test)]
mod tests;
