//! What a field's type holds, read from its syntax.
//!
//! A macro sees types as written, not what they implement, so the rules are
//! syntactic and conservative: `Tensor`, `Option<_>` and `Vec<_>` are
//! recognised by their last path segment, the primitive scalars by name, and
//! every other type is taken for a module. The generated code then calls
//! `Visit` on it, so a type that is not a module fails to compile instead of
//! being silently left out.

use syn::{GenericArgument, PathArguments, Type};

/// The tensor-holding structure of a field's type.
pub(crate) enum Shape<'a> {
    /// A `Tensor`: a parameter or a buffer.
    Tensor,
    /// A type that holds no tensors (`bool`, `f64`, `usize`, ..., or an
    /// `Option` or `Vec` of one).
    Plain,
    /// A submodule, of this type (a `Visit` implementation).
    Module(&'a Type),
    /// `Option<inner>`: visited when `Some`, under the field's own name.
    Option(Box<Shape<'a>>),
    /// `Vec<inner>`: element `i` is named `name.i`, as PyTorch's `ModuleList`.
    Vec(Box<Shape<'a>>),
}

const PRIMITIVES: &[&str] = &[
    "bool", "char", "f32", "f64", "i8", "i16", "i32", "i64", "i128", "isize", "u8", "u16", "u32",
    "u64", "u128", "usize",
];

impl<'a> Shape<'a> {
    /// Classifies `ty`.
    pub fn of(ty: &'a Type) -> Shape<'a> {
        let path = match ty {
            Type::Group(g) => return Shape::of(&g.elem),
            Type::Paren(p) => return Shape::of(&p.elem),
            Type::Path(p) if p.qself.is_none() => &p.path,
            _ => return Shape::Module(ty),
        };
        let Some(last) = path.segments.last() else {
            return Shape::Module(ty);
        };
        let name = last.ident.to_string();
        match &last.arguments {
            PathArguments::None if name == "Tensor" => Shape::Tensor,
            PathArguments::None
                if path.leading_colon.is_none()
                    && path.segments.len() == 1
                    && PRIMITIVES.contains(&name.as_str()) =>
            {
                Shape::Plain
            }
            PathArguments::AngleBracketed(args) if name == "Option" || name == "Vec" => {
                let mut types = args.args.iter().filter_map(|a| match a {
                    GenericArgument::Type(t) => Some(t),
                    _ => None,
                });
                match (types.next(), types.next()) {
                    (Some(inner), None) => {
                        let inner = Shape::of(inner);
                        if matches!(inner, Shape::Plain) {
                            Shape::Plain
                        } else if name == "Option" {
                            Shape::Option(Box::new(inner))
                        } else {
                            Shape::Vec(Box::new(inner))
                        }
                    }
                    _ => Shape::Module(ty),
                }
            }
            _ => Shape::Module(ty),
        }
    }

    /// Whether the field is one or more tensors (possibly optional, in
    /// vectors) rather than modules.
    pub fn holds_tensors(&self) -> bool {
        match self {
            Shape::Tensor => true,
            Shape::Plain | Shape::Module(_) => false,
            Shape::Option(inner) | Shape::Vec(inner) => inner.holds_tensors(),
        }
    }

    /// Whether the field is a tensor that would be named by its prefix
    /// alone (a `Tensor` or an `Option` of one): it cannot be flattened.
    pub fn is_single_tensor(&self) -> bool {
        match self {
            Shape::Tensor => true,
            Shape::Option(inner) => inner.is_single_tensor(),
            _ => false,
        }
    }

    /// Whether the type is exactly the primitive `bool`.
    pub fn is_bool(ty: &Type) -> bool {
        match ty {
            Type::Group(g) => Shape::is_bool(&g.elem),
            Type::Paren(p) => Shape::is_bool(&p.elem),
            Type::Path(p) => p.qself.is_none() && p.path.is_ident("bool"),
            _ => false,
        }
    }
}
