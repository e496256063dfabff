//! The name of a tier, interned: every served call carries it, so naming the tier must cost
//! no allocation and no reference count.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::fmt;
use std::ops::Deref;
use std::sync::OnceLock;

use parking_lot::Mutex;

/// A tier's name, as given to [`RouterBuilder::tier`](crate::RouterBuilder::tier).
///
/// Names are interned: each distinct name is stored once for the life of the process, and a
/// `TierName` is a reference to that copy. Copying one costs nothing, so a served call names
/// its tier without an allocation or an atomic reference count. The cost is that a name is
/// never freed: create tier names from configuration, not from per-call input. It reads as a
/// `str` and compares with strings:
///
/// ```
/// use flowbalancer_tiers::TierName;
///
/// let name = TierName::from("hot");
/// assert_eq!(name, "hot");
/// assert_eq!(name, TierName::from(String::from("hot")));
/// assert_eq!(name.as_str().len(), 3);
/// assert_eq!(format!("{name}"), "hot");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TierName(&'static str);

impl TierName {
    /// The name as a string slice (it lives as long as the process).
    pub fn as_str(&self) -> &'static str {
        self.0
    }

    /// The interned copy of `name`, stored on first use.
    fn intern(name: &str) -> Self {
        static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
        let mut names = NAMES.get_or_init(|| Mutex::new(HashSet::new())).lock();
        if let Some(&stored) = names.get(name) {
            return Self(stored);
        }
        // Stored once per distinct name, never freed: see the type's documentation.
        let stored: &'static str = Box::leak(Box::from(name));
        names.insert(stored);
        Self(stored)
    }
}

impl Deref for TierName {
    type Target = str;

    fn deref(&self) -> &str {
        self.0
    }
}

impl AsRef<str> for TierName {
    fn as_ref(&self) -> &str {
        self.0
    }
}

impl Borrow<str> for TierName {
    fn borrow(&self) -> &str {
        self.0
    }
}

impl From<&str> for TierName {
    fn from(name: &str) -> Self {
        Self::intern(name)
    }
}

impl From<String> for TierName {
    fn from(name: String) -> Self {
        Self::intern(&name)
    }
}

impl From<TierName> for String {
    fn from(name: TierName) -> Self {
        name.0.to_string()
    }
}

impl fmt::Display for TierName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl fmt::Debug for TierName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

impl PartialEq<str> for TierName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for TierName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for TierName {
    fn eq(&self, other: &String) -> bool {
        self.0 == other.as_str()
    }
}

impl PartialEq<TierName> for str {
    fn eq(&self, other: &TierName) -> bool {
        self == other.0
    }
}

impl PartialEq<TierName> for &str {
    fn eq(&self, other: &TierName) -> bool {
        *self == other.0
    }
}

impl serde::Serialize for TierName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0)
    }
}
