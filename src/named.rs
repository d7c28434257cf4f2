//! Enums with names: one table of `(variant, "name")` pairs gives an enum
//! its name, its parser and its serde form, so the command line, saved
//! configurations and messages can never spell a choice in two ways.

/// Implements `NAMES`, `name()`, `FromStr`, `Display`, `Serialize` and
/// `Deserialize` for a fieldless enum from one table of
/// `(Variant, "name")` pairs. A pair may list older spellings after the
/// name (`(Variant, "name", "old_name")`): they are read, never written,
/// so files saved by earlier versions keep loading.
macro_rules! named_enum {
    ($ty:ident, $op:literal, $what:literal,
     [$(($var:ident, $name:literal $(, $old:literal)*)),+ $(,)?]) => {
        impl $ty {
            /// Every accepted name, in order (older spellings excluded).
            pub const NAMES: &'static [&'static str] = &[$($name),+];

            /// The name used on the command line, in files and in messages.
            pub fn name(self) -> &'static str {
                match self { $($ty::$var => $name),+ }
            }
        }

        impl ::std::str::FromStr for $ty {
            type Err = $crate::error::Error;

            fn from_str(s: &str) -> $crate::error::Result<Self> {
                match s {
                    $($name $(| $old)* => Ok($ty::$var),)+
                    _ => Err($crate::error::Error::invalid(
                        $op,
                        format!("unknown {} `{s}` (expected one of: {})", $what, Self::NAMES.join(", ")),
                    )),
                }
            }
        }

        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl ::serde::Serialize for $ty {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> ::std::result::Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> ::std::result::Result<Self, D::Error> {
                let text = <::std::borrow::Cow<'de, str> as ::serde::Deserialize>::deserialize(d)?;
                text.parse().map_err(|e: $crate::error::Error| {
                    let msg = match e {
                        $crate::error::Error::InvalidArgument { msg, .. } => msg,
                        other => other.to_string(),
                    };
                    <D::Error as ::serde::de::Error>::custom(msg)
                })
            }
        }
    };
}

pub(crate) use named_enum;
