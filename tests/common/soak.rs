//! Settings of the randomized soaks and their reproducible draw of events. `make test` runs each
//! soak briefly ([`SHORT_SECONDS`] per target, a fixed seed); `make soak` sets
//! `INLET_SOAK_SECONDS` (600), a fresh `INLET_SOAK_SEED` and maybe `INLET_SOAK_TARGET`.

use std::time::{Duration, Instant};

/// Seconds of random events per target when `INLET_SOAK_SECONDS` is unset.
pub const SHORT_SECONDS: u64 = 15;
/// The seed when `INLET_SOAK_SEED` is unset, so a run in `make test` draws the same events.
const DEFAULT_SEED: u64 = 20_261_206;

pub struct Soak {
    pub seconds: u64,
    pub seed: u64,
    target: Option<String>,
}

impl Soak {
    pub fn from_env() -> Self {
        let number = |key: &str| std::env::var(key).ok().and_then(|s| s.parse().ok());
        Self {
            seconds: number("INLET_SOAK_SECONDS").unwrap_or(SHORT_SECONDS),
            seed: number("INLET_SOAK_SEED").unwrap_or(DEFAULT_SEED),
            target: std::env::var("INLET_SOAK_TARGET").ok(),
        }
    }

    /// Whether this run covers the target `name` (`parquet` or `iceberg`; both when unset).
    pub fn wants(&self, name: &str) -> bool {
        self.target.as_deref().is_none_or(|t| t == name)
    }

    /// The pause after each event: 0.5–4 s, drawn from the seed.
    pub fn pause(&self) -> Duration {
        Duration::from_millis(500 + self.seed % 3500)
    }

    /// Numbers in 0..20 drawn from the seed (xorshift64: reproducible without a dependency)
    /// until `seconds` have passed from the first call.
    pub fn draws(&self) -> impl Iterator<Item = u64> {
        let mut state = self.seed | 1;
        let deadline = Instant::now() + Duration::from_secs(self.seconds);
        std::iter::from_fn(move || {
            if Instant::now() >= deadline {
                return None;
            }
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            Some(state % 20)
        })
    }
}
