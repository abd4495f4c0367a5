//! `[cost]`: the prices that turn each round's measured cost into money (see `crate::cost`).
//!
//! ```toml
//! [cost]
//! currency = "EUR"
//! per_gib_moved = 0.02            # network egress/ingress
//! per_coordinator_cpu_hour = 0.04
//! per_client_training_hour = 0.10 # the regions' training nodes
//! ```

use super::ConfigError;
use serde::Deserialize;

/// `[cost]` as written; every price defaults to 0.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCost {
    pub currency: Option<String>,
    pub per_gib_moved: Option<f64>,
    pub per_coordinator_cpu_hour: Option<f64>,
    pub per_client_training_hour: Option<f64>,
}

impl RawCost {
    /// Validated prices: finite, non-negative, and a currency of 1–16 letters (default USD).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key.
    pub fn validate(self) -> Result<crate::cost::Prices, ConfigError> {
        let currency = self.currency.unwrap_or_else(|| "USD".into());
        if currency.is_empty() || currency.len() > 16 || !currency.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(ConfigError::Invalid {
                key: "cost.currency".into(),
                message: format!("must be 1 to 16 ASCII letters (e.g. USD), got {currency:?}"),
            });
        }
        let price = |key: &str, v: Option<f64>| {
            let v = v.unwrap_or(0.0);
            if v.is_finite() && v >= 0.0 {
                Ok(v)
            } else {
                Err(ConfigError::Invalid {
                    key: format!("cost.{key}"),
                    message: format!("must be a price ≥ 0, got {v}"),
                })
            }
        };
        Ok(crate::cost::Prices {
            per_gib_moved: price("per_gib_moved", self.per_gib_moved)?,
            per_coordinator_cpu_hour: price("per_coordinator_cpu_hour", self.per_coordinator_cpu_hour)?,
            per_client_training_hour: price("per_client_training_hour", self.per_client_training_hour)?,
            currency,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_are_validated_and_default_to_zero() {
        let p: RawCost = toml::from_str("per_gib_moved = 0.02").unwrap();
        let p = p.validate().unwrap();
        assert_eq!((p.currency.as_str(), p.per_gib_moved, p.per_client_training_hour), ("USD", 0.02, 0.0));
        let bad: RawCost = toml::from_str("per_coordinator_cpu_hour = -1.0").unwrap();
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("cost.per_coordinator_cpu_hour") && e.contains("-1"), "{e}");
        let bad: RawCost = toml::from_str("currency = \"€\"").unwrap();
        assert!(bad.validate().unwrap_err().to_string().contains("cost.currency"));
        assert!(toml::from_str::<RawCost>("per_byte = 1.0").unwrap_err().to_string().contains("per_byte"));
    }
}
