//! Validated names: [`RoomId`] and [`MessageId`], both `[A-Za-z0-9_.:-]{1,128}`.

use std::fmt;
use std::sync::Arc;

use super::RoomError;

/// Longest room name or message id.
pub const MAX_NAME_LEN: usize = 128;

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// A room name, checked once at the edge. Cloning is a refcount bump.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(Arc<str>);

impl RoomId {
    /// # Errors
    /// [`RoomError::BadRoomName`] unless `s` matches `[A-Za-z0-9_.:-]{1,128}`.
    pub fn parse(s: &str) -> Result<RoomId, RoomError> {
        if valid_name(s) {
            Ok(RoomId(Arc::from(s)))
        } else {
            Err(RoomError::BadRoomName)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// A message id inside a room: the API server's own id, or the message's seq when it gave none.
/// Cloning is a refcount bump: the message view and its id index share one allocation.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(Arc<str>);

impl MessageId {
    /// # Errors
    /// [`RoomError::BadMessageId`] unless `s` matches `[A-Za-z0-9_.:-]{1,128}`.
    pub fn parse(s: &str) -> Result<MessageId, RoomError> {
        if valid_name(s) {
            Ok(MessageId(Arc::from(s)))
        } else {
            Err(RoomError::BadMessageId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_follow_the_documented_alphabet() {
        for ok in ["lobby", "a", "A-b_c.d:e", &"x".repeat(128)] {
            assert_eq!(RoomId::parse(ok).unwrap().as_str(), ok);
        }
        for bad in ["", "a b", "a/b", "é", "room?", &"x".repeat(129), "%2e"] {
            assert_eq!(RoomId::parse(bad), Err(RoomError::BadRoomName), "{bad:?}");
        }
    }
}
