//! Medians and percentiles.

/// The median of `v` (upper median for an even count); NaN when empty.
pub fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(|a, b| a.total_cmp(b));
    s[s.len() / 2]
}

/// The `p`-th percentile (0..=100, nearest rank) of sorted samples; 0 when empty.
pub fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Median, minimum and maximum of `a[i] / b[i]`: for two peers measured back to back in each
/// round, so a host that drifts between rounds moves both sides of each ratio alike. `None`
/// when no pair has a positive, finite denominator.
pub fn paired_ratios(a: &[f64], b: &[f64]) -> Option<(f64, f64, f64)> {
    let r: Vec<f64> = a
        .iter()
        .zip(b)
        .filter(|(x, y)| x.is_finite() && y.is_finite() && **y > 0.0)
        .map(|(x, y)| x / y)
        .collect();
    let min = r.iter().copied().reduce(f64::min)?;
    let max = r.iter().copied().reduce(f64::max)?;
    Some((median(&r), min, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_percentiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 3.0);
        assert!(median(&[]).is_nan());
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[test]
    fn paired_ratios_cancel_drift_between_rounds() {
        // The host slows down round by round; A is 10% cheaper than B in every round.
        let b = [100.0, 130.0, 160.0];
        let a = [90.0, 117.0, 144.0];
        let (m, lo, hi) = paired_ratios(&a, &b).unwrap();
        assert!((m - 0.9).abs() < 1e-9 && (lo - 0.9).abs() < 1e-9 && (hi - 0.9).abs() < 1e-9);
        let (m, lo, hi) = paired_ratios(&[1.0, 3.0, 2.0], &[1.0, 1.0, 0.0]).unwrap();
        assert_eq!(
            (m, lo, hi),
            (3.0, 1.0, 3.0),
            "a zero denominator is skipped"
        );
        assert_eq!(paired_ratios(&[1.0], &[f64::NAN]), None);
        assert_eq!(paired_ratios(&[], &[]), None);
    }
}
