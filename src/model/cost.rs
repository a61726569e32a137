//! What a user's machine costs us, for the row's `monthly_cost_estimate_usd` and the console's totals.

/// Rough monthly cost of one always-on machine, REFERENCE §8: shared-cpu-1x 256 MB ≈ $1.94/month,
/// each extra shared vCPU the same again, extra RAM ≈ $5 per GB-month. A floor, not an invoice.
pub fn monthly_cost_estimate_usd(cpus: u32, memory_mb: u32) -> f64 {
    let base = 1.94 * f64::from(cpus);
    let included_mb = 256.0 * f64::from(cpus);
    let extra_gb = ((f64::from(memory_mb) - included_mb).max(0.0)) / 1024.0;
    ((base + extra_gb * 5.0) * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_grows_with_size() {
        assert_eq!(monthly_cost_estimate_usd(1, 256), 1.94);
        assert!(monthly_cost_estimate_usd(2, 512) < monthly_cost_estimate_usd(2, 1024));
    }
}
