//! Currencies, amounts and fee rates. Money is integers with checked arithmetic, never floats.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::bounds::{MAX_AMOUNT, MAX_CURRENCY_LEN};

/// A currency two friends agree to keep a balance in, e.g. `EUR` or `hours`.
///
/// 1 to [`MAX_CURRENCY_LEN`] ASCII letters, digits, `-`, `_` or `.`. Case matters.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(String);

/// Why a currency name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CurrencyError {
    /// Empty or too long.
    #[error("a currency name has 1 to {max} characters, {got:?} has {len}", max = MAX_CURRENCY_LEN, len = got.len())]
    BadLength {
        /// The refused name.
        got: String,
    },
    /// A character that is not allowed.
    #[error("a currency name may use letters, digits, '-', '_' and '.'; {got:?} has {bad:?}")]
    BadCharacter {
        /// The refused name.
        got: String,
        /// The first bad character.
        bad: char,
    },
}

impl Currency {
    /// Check and wrap a currency name.
    pub fn new(name: impl Into<String>) -> Result<Currency, CurrencyError> {
        let name = name.into();
        if name.is_empty() || name.len() > MAX_CURRENCY_LEN {
            return Err(CurrencyError::BadLength { got: name });
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(CurrencyError::BadCharacter { got: name, bad });
        }
        Ok(Currency(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Currency {
    type Error = CurrencyError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Currency::new(s)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.0
    }
}

impl FromStr for Currency {
    type Err = CurrencyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::new(s)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// The fee a mediator advertises for forwarding a payment: `base + dest_payment * ppm / 10^6`,
/// rounded down. The buyer quotes each mediator's fee from this rule; the mediator refuses a
/// quote below it (see `docs/protocol.md`, "Fees").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    /// Fixed part, in the payment's currency units.
    pub base: u64,
    /// Proportional part, in millionths of the amount that reaches the seller.
    pub ppm: u32,
}

impl Rate {
    /// The fee for forwarding a payment that delivers `dest_payment` to the seller, or `None`
    /// when it would exceed [`MAX_AMOUNT`].
    pub fn fee(&self, dest_payment: u64) -> Option<u64> {
        let proportional = u128::from(dest_payment)
            .checked_mul(u128::from(self.ppm))?
            .checked_div(1_000_000)?;
        let fee = u128::from(self.base).checked_add(proportional)?;
        u64::try_from(fee).ok().filter(|f| *f <= MAX_AMOUNT)
    }
}
