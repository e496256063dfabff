//! Debug output that names variables and headers but never shows their values.

use std::fmt;

/// `(name, value)` pairs shown by name only: an environment or a set of headers often holds a
/// token, and a spec printed with `{:?}` (in a log line, a panic, a test failure) must not
/// carry it.
///
/// ```
/// use flowbalancer_pool::process::RedactedValues;
///
/// let env = vec![("API_KEY".to_string(), "s3cret".to_string())];
/// let shown = format!("{:?}", RedactedValues(&env));
/// assert_eq!(shown, r#"{"API_KEY": "…"}"#);
/// ```
pub struct RedactedValues<'a>(pub &'a [(String, String)]);

impl fmt::Debug for RedactedValues<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(name, _)| (name, "…")))
            .finish()
    }
}
