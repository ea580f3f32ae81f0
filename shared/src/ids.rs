//! Identity of records and logs.
//!
//! An [`Offset`] is given by reflektor to every accepted record: strictly increasing, never
//! reused within one log. ekg uses it as the event's seq, so the same event has the same number
//! on every host. An [`Epoch`] names one log; it is fixed when the log is created, and a host
//! that sees a new epoch knows it is being fed by a different log.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Position of a record in the log. `Offset(0)` means "nothing": the first record is `1`.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Offset(pub u64);

impl Offset {
    /// No record: what a host that applied nothing reports.
    pub const ZERO: Offset = Offset(0);

    /// The offset just after this one.
    #[must_use]
    pub fn next(self) -> Offset {
        Offset(self.0.saturating_add(1))
    }

    /// The offset just before this one (saturating at zero).
    #[must_use]
    pub fn prev(self) -> Offset {
        Offset(self.0.saturating_sub(1))
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for Offset {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Offset)
    }
}

/// Identity of one log, random when the log is created. Shown and serialized as 16 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct Epoch(pub u64);

impl Epoch {
    /// A host that has not yet been fed by any log.
    pub const NONE: Epoch = Epoch(0);

    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for Epoch {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(s, 16).map(Epoch)
    }
}

impl Serialize for Epoch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Epoch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_round_trips_through_hex_text() {
        let e = Epoch(0x00ab_cdef_0123_4567);
        assert_eq!(e.to_string(), "00abcdef01234567");
        assert_eq!("00abcdef01234567".parse::<Epoch>().unwrap(), e);
    }

    #[test]
    fn offset_next_and_prev_saturate() {
        assert_eq!(Offset(u64::MAX).next(), Offset(u64::MAX));
        assert_eq!(Offset::ZERO.prev(), Offset::ZERO);
        assert_eq!(Offset(4).next(), Offset(5));
    }
}
