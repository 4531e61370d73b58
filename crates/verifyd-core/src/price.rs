//! Money and the price table (by method and country).

use std::collections::HashMap;

use crate::method::Method;

/// An amount in a currency (`{"currencyId":"EUR","amount":0.0453}` on the wire).
#[derive(Debug, Clone, PartialEq)]
pub struct Money {
    /// ISO 4217 code.
    pub currency: String,
    /// The amount, as a float (the wire type is a JSON number).
    pub amount: f64,
}

/// Prices per method, with per-country overrides (ISO alpha-2).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PriceTable {
    /// Currency of every amount in the table.
    pub currency: String,
    /// Price of one verification by method, for countries without an override.
    pub default: HashMap<Method, f64>,
    /// Overrides: country → method → price.
    pub countries: HashMap<String, HashMap<Method, f64>>,
    /// Termination price per started minute of a call (callout, answered flash calls).
    pub termination_per_minute: f64,
}

impl PriceTable {
    /// The price of one verification by `method` to `country` (0 when nothing is set).
    pub fn verification_price(&self, method: Method, country: Option<&str>) -> Money {
        let amount = country
            .and_then(|c| self.countries.get(c))
            .and_then(|m| m.get(&method))
            .or_else(|| self.default.get(&method))
            .copied()
            .unwrap_or(0.0);
        Money {
            currency: self.currency.clone(),
            amount,
        }
    }

    /// The termination price of a call of `billable_seconds`.
    pub fn termination_price(&self, billable_seconds: u32) -> Money {
        let minutes = billable_seconds.div_ceil(60);
        Money {
            currency: self.currency.clone(),
            amount: f64::from(minutes) * self.termination_per_minute,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn country_override_wins_over_default() {
        let mut t = PriceTable {
            currency: "EUR".into(),
            ..Default::default()
        };
        t.default.insert(Method::Sms, 0.05);
        t.countries
            .entry("SE".into())
            .or_default()
            .insert(Method::Sms, 0.0453);
        assert_eq!(t.verification_price(Method::Sms, Some("SE")).amount, 0.0453);
        assert_eq!(t.verification_price(Method::Sms, Some("FR")).amount, 0.05);
        assert_eq!(t.verification_price(Method::Sms, None).amount, 0.05);
        assert_eq!(
            t.verification_price(Method::Callout, Some("SE")).amount,
            0.0
        );
    }

    #[test]
    fn termination_is_billed_per_started_minute() {
        let t = PriceTable {
            currency: "EUR".into(),
            termination_per_minute: 0.01,
            ..Default::default()
        };
        assert_eq!(t.termination_price(0).amount, 0.0);
        assert_eq!(t.termination_price(1).amount, 0.01);
        assert_eq!(t.termination_price(61).amount, 0.02);
    }
}
