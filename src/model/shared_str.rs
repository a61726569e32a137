//! A string that many rows hold the same value of (a status, the org, a region, the image, a spec
//! digest), stored once and shared by every row that reads it.
//!
//! The full pass holds every `user_fly_apps` row while it plans. With a `String` per field, each of
//! eight such fields cost a heap block of its own in every row (a 64-character digest ~80 bytes, a
//! three-letter region 32): about 35 MB at 100,000 rows for a few distinct values. Rows read
//! through an [`Interner`] share one block per distinct value.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// An immutable shared string; compares, hashes and prints as its text.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SharedStr(Arc<str>);

impl SharedStr {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for SharedStr {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for SharedStr {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for SharedStr {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SharedStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl fmt::Debug for SharedStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl From<&str> for SharedStr {
    fn from(s: &str) -> Self {
        SharedStr(s.into())
    }
}

impl From<String> for SharedStr {
    fn from(s: String) -> Self {
        SharedStr(s.into())
    }
}

impl From<SharedStr> for String {
    fn from(s: SharedStr) -> Self {
        s.0.to_string()
    }
}

impl PartialEq<str> for SharedStr {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&str> for SharedStr {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<String> for SharedStr {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<SharedStr> for String {
    fn eq(&self, other: &SharedStr) -> bool {
        **self == *other.0
    }
}

impl PartialEq<SharedStr> for &str {
    fn eq(&self, other: &SharedStr) -> bool {
        **self == *other.0
    }
}

impl serde::Serialize for SharedStr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl sqlx::Type<sqlx::Postgres> for SharedStr {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <&str as sqlx::Type<sqlx::Postgres>>::type_info()
    }

    fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
        <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Postgres> for SharedStr {
    fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        Ok(SharedStr(
            <Arc<str> as sqlx::Decode<sqlx::Postgres>>::decode(value)?,
        ))
    }
}

/// The distinct values seen so far while reading a batch of rows; dropped with the batch's read.
#[derive(Default)]
pub struct Interner(HashSet<SharedStr>);

impl Interner {
    /// The shared copy of `s`'s text (`s` itself the first time it is seen).
    pub fn intern(&mut self, s: &mut SharedStr) {
        match self.0.get(s.as_str()) {
            Some(seen) => *s = seen.clone(),
            None => {
                self.0.insert(s.clone());
            }
        }
    }

    /// The shared copy of `s`, allocated only the first time it is seen.
    pub fn share(&mut self, s: &str) -> SharedStr {
        match self.0.get(s) {
            Some(seen) => seen.clone(),
            None => {
                let new = SharedStr::from(s);
                self.0.insert(new.clone());
                new
            }
        }
    }

    pub fn intern_opt(&mut self, s: &mut Option<SharedStr>) {
        if let Some(s) = s {
            self.intern(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_texts_read_through_one_interner_share_one_block() {
        let mut interner = Interner::default();
        let mut a = SharedStr::from(String::from("registry.fly.io/vyx-screener:v1"));
        let mut b = SharedStr::from(String::from("registry.fly.io/vyx-screener:v1"));
        let mut c = SharedStr::from("sin");
        assert!(!Arc::ptr_eq(&a.0, &b.0));
        interner.intern(&mut a);
        interner.intern(&mut b);
        interner.intern(&mut c);
        assert!(Arc::ptr_eq(&a.0, &b.0));
        assert_eq!(a, "registry.fly.io/vyx-screener:v1");
        assert_eq!(c, "sin");
        assert_eq!(interner.0.len(), 2);
    }
}
