//! Order statistics over samples in milliseconds. Nearest-rank percentiles: no interpolation, so
//! every figure printed is a time that was actually measured.

use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub count: usize,
    pub min: f64,
    pub median: f64,
    pub p90: f64,
    pub p99: f64,
    /// Operations per second of wall-clock time of the phase(s) the samples come from.
    pub ops_per_s: f64,
}

impl Summary {
    /// `wall_s` is the wall-clock time during which the `samples` operations ran (for parallel
    /// phases that is less than their sum).
    pub fn of(samples: &[f64], wall_s: f64) -> Summary {
        if samples.is_empty() {
            return Summary::default();
        }
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        Summary {
            count: s.len(),
            min: s[0],
            median: percentile_sorted(&s, 0.5),
            p90: percentile_sorted(&s, 0.9),
            p99: percentile_sorted(&s, 0.99),
            ops_per_s: if wall_s > 0.0 {
                s.len() as f64 / wall_s
            } else {
                0.0
            },
        }
    }

    pub fn to_json(self) -> Value {
        json!({
            "count": self.count, "min_ms": self.min, "median_ms": self.median,
            "p90_ms": self.p90, "p99_ms": self.p99, "ops_per_s": self.ops_per_s,
        })
    }
}

fn percentile_sorted(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn median(samples: &[f64]) -> f64 {
    Summary::of(samples, 0.0).median
}

pub fn max(samples: &[f64]) -> f64 {
    samples.iter().copied().fold(0.0, f64::max)
}

/// `a / b`, or NaN when there is nothing to compare.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 && a.is_finite() {
        a / b
    } else {
        f64::NAN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Summary::of(&v, 2.0);
        assert_eq!((s.min, s.median, s.p90, s.p99), (1.0, 50.0, 90.0, 99.0));
        assert_eq!(s.ops_per_s, 50.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(Summary::of(&[7.0], 1.0).p99, 7.0);
    }
}
