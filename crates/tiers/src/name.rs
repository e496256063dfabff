//! The name of a tier, shared rather than copied: every served call carries it.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// A tier's name, as given to [`RouterBuilder::tier`](crate::RouterBuilder::tier).
///
/// Cloning it is a reference-count increment, so a served call can name its tier without an
/// allocation. It reads as a `str` and compares with strings:
///
/// ```
/// use flowbalancer_tiers::TierName;
///
/// let name = TierName::from("hot");
/// assert_eq!(name, "hot");
/// assert_eq!(name.as_str().len(), 3);
/// assert_eq!(format!("{name}"), "hot");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TierName(Arc<str>);

impl TierName {
    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for TierName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for TierName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for TierName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for TierName {
    fn from(name: &str) -> Self {
        Self(Arc::from(name))
    }
}

impl From<String> for TierName {
    fn from(name: String) -> Self {
        Self(Arc::from(name))
    }
}

impl From<TierName> for String {
    fn from(name: TierName) -> Self {
        name.0.to_string()
    }
}

impl fmt::Display for TierName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TierName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl PartialEq<str> for TierName {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for TierName {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for TierName {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<TierName> for str {
    fn eq(&self, other: &TierName) -> bool {
        self == &*other.0
    }
}

impl PartialEq<TierName> for &str {
    fn eq(&self, other: &TierName) -> bool {
        *self == &*other.0
    }
}

impl serde::Serialize for TierName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}
