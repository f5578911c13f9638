//! The one retry backoff, for the worker's export attempts and for webhook deliveries (in the
//! server and the mock): exponential, with "equal jitter" in the words of AWS's Architecture
//! Blog ("Exponential Backoff And Jitter"): half the ceiling, plus a random share of the
//! other half. Not full jitter (`U(0, ceiling)`), on purpose: spread out all the same, retries
//! that failed together do not retry together, and a retry never comes sooner than half its
//! ceiling, so a store or receiver that is failing gets that much rest from each of them.

use std::time::Duration;

/// The backoff after failed attempt `attempt` (1 for the first): a ceiling of `first`,
/// doubled for each later attempt and capped at `max`, jittered equally.
pub fn equal_jitter(first: Duration, attempt: u32, max: Duration) -> Duration {
    let ceiling = first.saturating_mul(1 << (attempt.clamp(1, 20) - 1)).min(max);
    let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(millis / 2 + rand::random_range(0..=millis - millis / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_half_its_ceiling_to_the_ceiling_up_to_the_cap() {
        let (first, max) = (Duration::from_secs(10), Duration::from_secs(3600));
        let (mut lowest, mut highest) = (Duration::MAX, Duration::ZERO);
        for _ in 0..1000 {
            for (attempt, ceiling) in [(1, 10), (2, 20), (3, 40), (12, 3600), (40, 3600)] {
                let backoff = equal_jitter(first, attempt, max);
                let ceiling = Duration::from_secs(ceiling);
                assert!(
                    backoff >= ceiling / 2 && backoff <= ceiling,
                    "{attempt}: {backoff:?}"
                );
            }
            let backoff = equal_jitter(first, 1, max);
            (lowest, highest) = (lowest.min(backoff), highest.max(backoff));
        }
        // Jittered across the half: 1,000 draws of 5,001 values fall in its quarters.
        assert!(lowest < Duration::from_millis(6250) && highest > Duration::from_millis(8750));
        // An odd ceiling still reaches it.
        assert!(equal_jitter(Duration::from_millis(1), 1, max) <= Duration::from_millis(1));
    }
}
