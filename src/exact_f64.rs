//! Serde helpers that write an `f64` as its shortest round-trip decimal
//! string (`"0.01"`, `"1e-6"`) and read it back with Rust's exact parser,
//! so saved state comes back bit for bit whatever the JSON library does
//! with numbers. A plain JSON number is refused: it may already have been
//! rounded by whatever wrote it.
//!
//! Use with `#[serde(with = "crate::exact_f64")]` (one value) or
//! `#[serde(with = "crate::exact_f64::vec")]` (a list).

use serde::de::{self, Deserializer, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use std::fmt;

/// Writes `x` as a string in Rust's shortest round-trip form.
pub fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{x:?}"))
}

/// Reads a number string.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    d.deserialize_str(ExactF64)
}

/// A visitor accepting a decimal string.
struct ExactF64;

impl Visitor<'_> for ExactF64 {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number written as a string, e.g. \"0.01\"")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
        v.parse()
            .map_err(|_| E::custom(format!("`{v}` is not a number")))
    }
}

/// The same for a `Vec<f64>`.
pub mod vec {
    use super::*;

    /// Writes every element as [`super::serialize`] does.
    pub fn serialize<S: Serializer>(xs: &[f64], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(xs.len()))?;
        for x in xs {
            seq.serialize_element(&format_args!("{x:?}").to_string())?;
        }
        seq.end()
    }

    /// Reads a list of number strings.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        /// One element, read as [`super::deserialize`] does.
        struct Element(f64);
        impl<'de> serde::Deserialize<'de> for Element {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                super::deserialize(d).map(Element)
            }
        }
        let elements: Vec<Element> = serde::Deserialize::deserialize(d)?;
        Ok(elements.into_iter().map(|e| e.0).collect())
    }
}
