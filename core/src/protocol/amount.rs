//! Currencies, amounts and fee rates. Money is integers with checked arithmetic, never floats.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::bounds::{MAX_AMOUNT, MAX_CURRENCY_LEN};

/// A currency two friends agree to keep a balance in, e.g. `EUR` or `hours`.
///
/// 1 to [`MAX_CURRENCY_LEN`] ASCII letters, digits, `-`, `_` or `.`. Case matters.
///
/// Held inline (the name's bytes and its length), so copying one allocates nothing: every
/// request, response and credit line names its currency, and as a `String` each copy and each
/// encoding cost an allocation (about 1 % of a payment's CPU flat out). It encodes and orders
/// exactly as its name does (a string), so encodings, signatures and state hashes are the same
/// as when it was a `String`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency {
    /// At most `MAX_CURRENCY_LEN`, which fits.
    len: u8,
    /// The name, then zeros.
    bytes: [u8; MAX_CURRENCY_LEN],
}

const _: () = assert!(MAX_CURRENCY_LEN <= u8::MAX as usize);

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
    pub fn new(name: impl AsRef<str>) -> Result<Currency, CurrencyError> {
        let name = name.as_ref();
        if name.is_empty() || name.len() > MAX_CURRENCY_LEN {
            return Err(CurrencyError::BadLength {
                got: name.to_string(),
            });
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(CurrencyError::BadCharacter {
                got: name.to_string(),
                bad,
            });
        }
        let mut bytes = [0u8; MAX_CURRENCY_LEN];
        for (slot, b) in bytes.iter_mut().zip(name.bytes()) {
            *slot = b;
        }
        Ok(Currency {
            // At most MAX_CURRENCY_LEN (16), checked above.
            len: name.len() as u8,
            bytes,
        })
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        // ASCII by construction.
        self.bytes
            .get(..usize::from(self.len))
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or_default()
    }
}

/// In the order of the names, as when a currency was a `String`: credit lines are kept, and
/// hashed into the state both friends sign, in this order.
impl Ord for Currency {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for Currency {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Currency, D::Error> {
        struct Name;
        impl serde::de::Visitor<'_> for Name {
            type Value = Currency;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a currency name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Currency, E> {
                Currency::new(v).map_err(E::custom)
            }
        }
        d.deserialize_str(Name)
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
        c.as_str().to_string()
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
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
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
