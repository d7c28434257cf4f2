//! The `#[module(...)]` field attributes.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{Attribute, LitStr};

/// What `#[module(...)]` says about one field; each key remembers where it
/// was written, for error messages.
#[derive(Default)]
pub(crate) struct FieldAttrs {
    /// `skip`: not visited, not told the training mode.
    pub skip: Option<Span>,
    /// `buffer`: tensors saved with the model but not trained.
    pub buffer: Option<Span>,
    /// `flatten`: the field takes its parent's prefix instead of a name.
    pub flatten: Option<Span>,
    /// `training`: the `bool` set by `set_training`.
    pub training: Option<Span>,
    /// `sync_group`: the `Option<SyncGroup>` set by `set_sync_group`.
    pub sync_group: Option<Span>,
    /// `rename = "..."`: the `state_dict` name instead of the field's.
    pub rename: Option<(String, Span)>,
}

impl FieldAttrs {
    /// Keys that only make sense on a field that holds tensors, with their
    /// spans: `(key, span)`.
    pub fn naming_keys(&self) -> Vec<(&'static str, Span)> {
        let mut out = Vec::new();
        if let Some(s) = self.buffer {
            out.push(("buffer", s));
        }
        if let Some(s) = self.flatten {
            out.push(("flatten", s));
        }
        if let Some((_, s)) = &self.rename {
            out.push(("rename", *s));
        }
        out
    }
}

const EXPECTED: &str =
    "expected `skip`, `buffer`, `flatten`, `training`, `sync_group` or `rename = \"...\"` in `#[module(...)]`";

/// Reads every `#[module(...)]` attribute of a field.
pub(crate) fn parse_field(attrs: &[Attribute]) -> syn::Result<FieldAttrs> {
    let mut out = FieldAttrs::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("module")) {
        attr.parse_nested_meta(|meta| {
            let span = meta.path.span();
            let key = meta
                .path
                .get_ident()
                .map(|i| i.to_string())
                .unwrap_or_default();
            let slot = match key.as_str() {
                "skip" => &mut out.skip,
                "buffer" => &mut out.buffer,
                "flatten" => &mut out.flatten,
                "training" => &mut out.training,
                "sync_group" => &mut out.sync_group,
                "rename" => {
                    if out.rename.is_some() {
                        return Err(meta.error("duplicate `rename`"));
                    }
                    let lit: LitStr = meta.value()?.parse()?;
                    let name = lit.value();
                    check_name(&name, lit.span())?;
                    out.rename = Some((name, span));
                    return Ok(());
                }
                _ => return Err(meta.error(EXPECTED)),
            };
            if slot.is_some() {
                return Err(meta.error(format!("duplicate `{key}`")));
            }
            *slot = Some(span);
            Ok(())
        })?;
    }
    if out.skip.is_some() {
        let others = out.naming_keys();
        let training = out.training.map(|s| ("training", s));
        let sync = out.sync_group.map(|s| ("sync_group", s));
        if let Some((key, span)) = others.into_iter().chain(training).chain(sync).next() {
            return Err(syn::Error::new(
                span,
                format!("`{key}` has no effect on a field marked `skip`"),
            ));
        }
    }
    if let (Some(span), Some(_)) = (out.sync_group, out.training) {
        return Err(syn::Error::new(
            span,
            "`sync_group` and `training` exclude each other: one field cannot be both",
        ));
    }
    if let (Some(span), Some(_)) = (out.flatten, &out.rename) {
        return Err(syn::Error::new(
            span,
            "`flatten` and `rename` exclude each other: a flattened field has no name of its own",
        ));
    }
    Ok(out)
}

/// Rejects `#[module(...)]` where it does not belong (on the item or on a
/// variant).
pub(crate) fn reject(attrs: &[Attribute], place: &str) -> syn::Result<()> {
    match attrs.iter().find(|a| a.path().is_ident("module")) {
        Some(attr) => Err(syn::Error::new(
            attr.meta.span(),
            format!("`#[module(...)]` goes on fields, not on {place}"),
        )),
        None => Ok(()),
    }
}

/// A `state_dict` name: non-empty dot-separated parts, none of them empty.
fn check_name(name: &str, span: Span) -> syn::Result<()> {
    if name.split('.').any(str::is_empty) {
        return Err(syn::Error::new(
            span,
            format!("`{name}` is not a state_dict name: expected non-empty parts separated by single dots"),
        ));
    }
    Ok(())
}
