//! Median, min and max of repeated measurements.
use serde::{Deserialize, Serialize};

/// A figure taken several times: its median, range and every sample.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
    pub samples: Vec<f64>,
}

impl Summary {
    /// `None` when there is no (finite) sample.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Summary {
            median,
            min: v[0],
            max: v[n - 1],
            n,
            samples: samples.to_vec(),
        })
    }

    /// `median [min–max]` with each value passed through `f`.
    pub fn show(&self, f: impl Fn(f64) -> String) -> String {
        if self.n == 1 {
            return format!("{} (n=1)", f(self.median));
        }
        format!("{} [{}–{}]", f(self.median), f(self.min), f(self.max))
    }
}

/// `show` for an optional summary.
pub fn show(s: &Option<Summary>, f: impl Fn(f64) -> String) -> String {
    match s {
        Some(s) => s.show(f),
        None => "–".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::Summary;

    #[test]
    fn median_of_odd_and_even() {
        let s = Summary::of(&[3.0, 1.0, 2.0]).expect("samples");
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        let s = Summary::of(&[4.0, 1.0, 2.0, 3.0]).expect("samples");
        assert_eq!(s.median, 2.5);
        assert!(Summary::of(&[]).is_none());
        assert!(Summary::of(&[f64::NAN]).is_none());
    }
}
