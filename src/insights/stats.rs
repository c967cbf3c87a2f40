//! Robust statistics the insights rest on: percentiles, the median and the median absolute
//! deviation (MAD). Pure functions over slices; nothing here reads the store or the clock.

/// The `p`-th percentile (0–100) of `values` by linear interpolation between the closest
/// ranks (the method spreadsheets call `PERCENTILE.INC`); `None` when `values` is empty.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_unstable_by(f64::total_cmp);
    let rank = (p.clamp(0.0, 100.0) / 100.0) * (v.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    let frac = rank - lo as f64;
    Some(v[lo] + (v[hi] - v[lo]) * frac)
}

/// The median of `values`.
pub fn median(values: &[f64]) -> Option<f64> {
    percentile(values, 50.0)
}

/// The median absolute deviation from the median: a spread that a few wild values cannot
/// move (unlike the standard deviation). Multiply by 1.4826 to compare it with a standard
/// deviation of normally distributed data.
pub fn mad(values: &[f64]) -> Option<f64> {
    let m = median(values)?;
    let dev: Vec<f64> = values.iter().map(|x| (x - m).abs()).collect();
    median(&dev)
}

/// The factor that makes the MAD of normal data estimate its standard deviation.
pub const MAD_TO_SIGMA: f64 = 1.4826;

/// The mean of `values`, `None` when empty.
pub fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let v = [10.0, 1.0, 4.0, 3.0, 2.0];
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&v, 100.0), Some(10.0));
        assert_eq!(percentile(&v, 50.0), Some(3.0));
        // Rank 0.25 × 4 = 1: exactly the second smallest; 0.1 × 4 = 0.4 between 1 and 2.
        assert_eq!(percentile(&v, 25.0), Some(2.0));
        assert!((percentile(&v, 10.0).unwrap() - 1.4).abs() < 1e-12);
        assert_eq!(percentile(&[], 5.0), None);
        assert_eq!(percentile(&[7.0], 5.0), Some(7.0));
    }

    #[test]
    fn the_mad_ignores_a_wild_value() {
        let v = [10.0, 11.0, 9.0, 10.0, 10.5, 9.5, 1_000.0];
        assert_eq!(median(&v), Some(10.0));
        // Deviations 0, 1, 1, 0, 0.5, 0.5, 990: their median is 0.5.
        assert_eq!(mad(&v), Some(0.5));
        assert_eq!(median(&[1.0, 2.0, 3.0, 4.0]), Some(2.5));
        assert_eq!(mean(&[1.0, 2.0, 6.0]), Some(3.0));
    }
}
