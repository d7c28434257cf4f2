//! The generated `impl ferrite::nn::Visit`.

use crate::attrs::{self, FieldAttrs};
use crate::shape::Shape;
use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Fields, Ident, Index};

/// One field the generated methods touch.
struct Field<'a> {
    /// `name` or `0`: the field in a struct pattern.
    member: TokenStream,
    /// The local the pattern binds it to.
    binding: Ident,
    kind: Kind<'a>,
}

enum Kind<'a> {
    /// Tensors or submodules, visited under `name` (`None`: flattened, under
    /// the parent's prefix).
    Visited {
        shape: Shape<'a>,
        name: Option<String>,
        buffer: bool,
    },
    /// The `bool` that `set_training` sets.
    Training,
    /// The `Option<SyncGroup>` that `set_sync_group` sets.
    SyncGroup,
}

/// A struct, or one variant of an enum: the path its pattern starts with
/// (`Self`, `Self::Variant`) and its fields.
struct Arm<'a> {
    path: TokenStream,
    fields: Vec<Field<'a>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Visit,
    VisitMut,
    SetTraining,
    SetSyncGroup,
}

/// Expands `#[derive(Module)]` on `input`.
pub(crate) fn derive(input: &DeriveInput) -> syn::Result<TokenStream> {
    attrs::reject(&input.attrs, "the item")?;
    let (arms, is_enum) = match &input.data {
        Data::Struct(s) => (
            vec![Arm {
                path: quote!(Self),
                fields: plan(&s.fields)?,
            }],
            false,
        ),
        Data::Enum(e) => {
            let mut arms = Vec::new();
            let mut errors: Option<syn::Error> = None;
            for v in &e.variants {
                let ident = &v.ident;
                match attrs::reject(&v.attrs, "variants").and_then(|()| plan(&v.fields)) {
                    Ok(fields) => arms.push(Arm {
                        path: quote!(Self::#ident),
                        fields,
                    }),
                    Err(e) => combine(&mut errors, e),
                }
            }
            if let Some(e) = errors {
                return Err(e);
            }
            (arms, true)
        }
        Data::Union(u) => {
            return Err(syn::Error::new(
                u.union_token.span,
                "`#[derive(Module)]` does not support unions: the active field is unknown",
            ))
        }
    };
    let visit = body(&arms, is_enum, Mode::Visit);
    let visit_mut = body(&arms, is_enum, Mode::VisitMut);
    let set_training = body(&arms, is_enum, Mode::SetTraining);
    let set_sync_group = body(&arms, is_enum, Mode::SetSyncGroup);
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    Ok(quote! {
        #[automatically_derived]
        impl #impl_generics ::ferrite::nn::Visit for #ident #ty_generics #where_clause {
            fn visit(
                &self,
                prefix: &::core::primitive::str,
                f: &mut dyn ::core::ops::FnMut(
                    &::core::primitive::str,
                    &::ferrite::Tensor,
                    ::ferrite::nn::Role,
                ),
            ) {
                #visit
            }
            fn visit_mut(
                &mut self,
                prefix: &::core::primitive::str,
                f: &mut dyn ::core::ops::FnMut(
                    &::core::primitive::str,
                    &mut ::ferrite::Tensor,
                    ::ferrite::nn::Role,
                ),
            ) {
                #visit_mut
            }
            fn set_training(&mut self, training: ::core::primitive::bool) {
                #set_training
            }
            fn set_sync_group(
                &mut self,
                group: ::core::option::Option<&::ferrite::distributed::SyncGroup>,
            ) {
                #set_sync_group
            }
        }
    })
}

fn combine(errors: &mut Option<syn::Error>, e: syn::Error) {
    match errors {
        Some(all) => all.combine(e),
        None => *errors = Some(e),
    }
}

/// Decides, field by field, what the generated methods do; reports every
/// misplaced attribute at once.
fn plan(fields: &Fields) -> syn::Result<Vec<Field<'_>>> {
    let mut out = Vec::new();
    let mut errors = None;
    for (i, field) in fields.iter().enumerate() {
        let attrs = match attrs::parse_field(&field.attrs) {
            Ok(a) => a,
            Err(e) => {
                combine(&mut errors, e);
                continue;
            }
        };
        if attrs.skip.is_some() {
            continue;
        }
        let (member, default_name) = match &field.ident {
            Some(ident) => (quote!(#ident), ident.unraw().to_string()),
            None => {
                let index = Index {
                    index: i as u32,
                    span: field.ty.span(),
                };
                (quote!(#index), i.to_string())
            }
        };
        let named_training = default_name == "training" && field.ident.is_some();
        match kind(&field.ty, attrs, default_name, named_training) {
            Ok(Some(kind)) => out.push(Field {
                member,
                binding: format_ident!("__field{}", i),
                kind,
            }),
            Ok(None) => {}
            Err(e) => combine(&mut errors, e),
        }
    }
    match errors {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// What one field is; `None` for a field that holds no tensors.
fn kind(
    ty: &syn::Type,
    attrs: FieldAttrs,
    default_name: String,
    named_training: bool,
) -> syn::Result<Option<Kind<'_>>> {
    if attrs.sync_group.is_some() {
        return match attrs.naming_keys().first() {
            Some((key, span)) => Err(no_effect(key, *span, "the synchronisation group")),
            None => Ok(Some(Kind::SyncGroup)),
        };
    }
    let is_bool = Shape::is_bool(ty);
    if let Some(span) = attrs.training {
        if !is_bool {
            return Err(syn::Error::new(
                span,
                "`training` marks the `bool` field that `set_training` sets",
            ));
        }
    }
    if attrs.training.is_some() || (named_training && is_bool) {
        return match attrs.naming_keys().first() {
            Some((key, span)) => Err(no_effect(key, *span, "the training flag")),
            None => Ok(Some(Kind::Training)),
        };
    }
    let shape = Shape::of(ty);
    if matches!(shape, Shape::Plain) {
        return match attrs.naming_keys().first() {
            Some((key, span)) => Err(no_effect(key, *span, "a field that holds no tensors")),
            None => Ok(None),
        };
    }
    if let Some(span) = attrs.buffer {
        if !shape.holds_tensors() {
            return Err(syn::Error::new(
                span,
                "`buffer` applies to tensor fields (`Tensor`, or an `Option` or `Vec` of them); a submodule names its own buffers",
            ));
        }
    }
    if let Some(span) = attrs.flatten {
        if shape.is_single_tensor() {
            return Err(syn::Error::new(
                span,
                "a tensor needs a name of its own: `flatten` applies to submodules and `Vec`s",
            ));
        }
    }
    let name = match (attrs.flatten, attrs.rename) {
        (Some(_), _) => None,
        (None, Some((name, _))) => Some(name),
        (None, None) => Some(default_name),
    };
    Ok(Some(Kind::Visited {
        shape,
        name,
        buffer: attrs.buffer.is_some(),
    }))
}

fn no_effect(key: &str, span: Span, what: &str) -> syn::Error {
    syn::Error::new(span, format!("`{key}` has no effect on {what}"))
}

/// Whether `mode` touches `field`.
fn touches(field: &Field<'_>, mode: Mode) -> bool {
    match (&field.kind, mode) {
        (Kind::Training, Mode::SetTraining) => true,
        (Kind::Training, _) => false,
        (Kind::SyncGroup, Mode::SetSyncGroup) => true,
        (Kind::SyncGroup, _) => false,
        (Kind::Visited { shape, .. }, Mode::SetTraining | Mode::SetSyncGroup) => {
            !shape.holds_tensors()
        }
        (Kind::Visited { .. }, _) => true,
    }
}

/// The body of one generated method.
fn body(arms: &[Arm<'_>], is_enum: bool, mode: Mode) -> TokenStream {
    let mut used = false;
    let mut rendered = Vec::new();
    for arm in arms {
        let fields: Vec<&Field<'_>> = arm.fields.iter().filter(|f| touches(f, mode)).collect();
        used |= !fields.is_empty();
        let members = fields.iter().map(|f| &f.member);
        let bindings = fields.iter().map(|f| &f.binding);
        let path = &arm.path;
        let pattern = quote!(#path { #(#members: #bindings,)* .. });
        let stmts: Vec<TokenStream> = fields.iter().map(|f| field_code(f, mode)).collect();
        rendered.push((pattern, stmts));
    }
    let unused = match (used, mode) {
        (true, _) => quote!(),
        (false, Mode::SetTraining) => quote!(let _ = training;),
        (false, Mode::SetSyncGroup) => quote!(let _ = group;),
        (false, _) => quote!(let _ = (prefix, f);),
    };
    if !is_enum {
        let (pattern, stmts) = rendered.pop().expect("a struct has one arm");
        if stmts.is_empty() {
            return unused;
        }
        return quote! {
            let #pattern = self;
            #(#stmts)*
        };
    }
    if rendered.is_empty() {
        return quote! {
            #unused
            match *self {}
        };
    }
    let arms = rendered.into_iter().map(|(pattern, stmts)| {
        quote! { #pattern => { #(#stmts)* } }
    });
    quote! {
        #unused
        match self {
            #(#arms)*
        }
    }
}

/// The statements for one field.
fn field_code(field: &Field<'_>, mode: Mode) -> TokenStream {
    let binding = &field.binding;
    let (shape, name, buffer) = match &field.kind {
        Kind::Training => return quote!(*#binding = training;),
        Kind::SyncGroup => return quote!(*#binding = group.cloned();),
        Kind::Visited {
            shape,
            name,
            buffer,
        } => (shape, name, *buffer),
    };
    if matches!(mode, Mode::SetTraining | Mode::SetSyncGroup) {
        return walk(shape, quote!(#binding), &quote!(), &quote!(), mode, 0);
    }
    let role = if buffer {
        quote!(::ferrite::nn::Role::Buffer)
    } else {
        quote!(::ferrite::nn::Role::Parameter)
    };
    match name {
        None => walk(shape, quote!(#binding), &quote!(prefix), &role, mode, 0),
        Some(name) => {
            let var = format_ident!("{}_name", binding);
            let inner = walk(shape, quote!(#binding), &quote!(&#var), &role, mode, 0);
            quote! {
                let #var = ::ferrite::nn::join(prefix, #name);
                #inner
            }
        }
    }
}

/// Visits what `expr` (a reference to a value of `shape`) holds, under the
/// name `name` (a `&str` expression).
fn walk(
    shape: &Shape<'_>,
    expr: TokenStream,
    name: &TokenStream,
    role: &TokenStream,
    mode: Mode,
    depth: usize,
) -> TokenStream {
    match shape {
        Shape::Plain => quote!(),
        Shape::Tensor => match mode {
            Mode::SetTraining | Mode::SetSyncGroup => quote!(),
            Mode::Visit | Mode::VisitMut => quote!(f(#name, #expr, #role);),
        },
        Shape::Module(ty) => {
            // The field's own type in the path: a type that is not a module
            // is reported there, once per field.
            let visit = quote!(<#ty as ::ferrite::nn::Visit>);
            match mode {
                Mode::Visit => quote!(#visit::visit(#expr, #name, f);),
                Mode::VisitMut => quote!(#visit::visit_mut(#expr, #name, f);),
                Mode::SetTraining => quote!(#visit::set_training(#expr, training);),
                Mode::SetSyncGroup => quote!(#visit::set_sync_group(#expr, group);),
            }
        }
        Shape::Option(inner) => {
            let item = format_ident!("__item{}", depth);
            let body = walk(inner, quote!(#item), name, role, mode, depth + 1);
            quote! {
                if let ::core::option::Option::Some(#item) = #expr {
                    #body
                }
            }
        }
        Shape::Vec(inner) => {
            let item = format_ident!("__item{}", depth);
            let iter = quote!(::core::iter::IntoIterator::into_iter(#expr));
            if matches!(mode, Mode::SetTraining | Mode::SetSyncGroup) {
                let body = walk(inner, quote!(#item), name, role, mode, depth + 1);
                return quote! {
                    for #item in #iter {
                        #body
                    }
                };
            }
            let index = format_ident!("__index{}", depth);
            let child = format_ident!("__name{}", depth);
            let body = walk(
                inner,
                quote!(#item),
                &quote!(&#child),
                role,
                mode,
                depth + 1,
            );
            quote! {
                for (#index, #item) in ::core::iter::Iterator::enumerate(#iter) {
                    let #child = ::ferrite::nn::join(
                        #name,
                        &::std::string::ToString::to_string(&#index),
                    );
                    #body
                }
            }
        }
    }
}
