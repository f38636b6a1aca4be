//! The arguments of `#[grain(...)]`: `name` (or `implements`), `state`, and the optional
//! `reentrant`, `reference`, `state_version`, `upgrade`, `idle_after`, `role`,
//! `stateless_worker` and `crate`; and those of `#[grain_interface(...)]`: `name` and `crate`.

use proc_macro2::{Span, TokenStream, TokenTree};
use syn::parse::Parser;
use syn::{Ident, LitInt, LitStr, Path, Type};

use crate::errors::Errors;

/// The parsed arguments of one `#[grain(...)]` attribute.
pub(crate) struct GrainArgs {
    /// `name = "..."`: the stable type name.
    pub(crate) name: LitStr,
    /// `state = Type`: the persisted state.
    pub(crate) state: Type,
    /// `reentrant`: calls on the same chain may reenter.
    pub(crate) reentrant: bool,
    /// `reference = Name`: overrides the generated reference's name.
    pub(crate) reference: Option<Ident>,
    /// `state_version = N`: the state's schema version (1 unless given).
    pub(crate) state_version: Option<LitInt>,
    /// `upgrade = path`: the function upgrading a stored state one schema version.
    pub(crate) upgrade: Option<Path>,
    /// `idle_after = "90s"` or `"never"`: how long an idle activation lives.
    pub(crate) idle_after: Option<IdleAfterArg>,
    /// `role = "sim"`: the silo role the type asks for.
    pub(crate) role: Option<LitStr>,
    /// `stateless_worker` or `stateless_worker = N`: a stateless worker type.
    pub(crate) stateless_worker: Option<StatelessArg>,
    /// `crate = "path"`: where the facade lives (`::granary` unless given).
    pub(crate) krate: Path,
    /// `implements = path::Trait`: the `#[grain_interface]` trait the grain implements, which
    /// gives its name, methods, reference and mock.
    pub(crate) implements: Option<Path>,
}

/// The parsed arguments of one `#[grain_interface(...)]` attribute.
pub(crate) struct InterfaceArgs {
    /// `name = "..."`: the stable type name of the grains implementing it.
    pub(crate) name: LitStr,
    /// `crate = "path"`: where the facade lives (`::granary` unless given).
    pub(crate) krate: Path,
}

/// A parsed `stateless_worker` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StatelessArg {
    /// `stateless_worker`: one activation per core and key.
    PerCore,
    /// `stateless_worker = N`, `N >= 1`.
    Max(LitInt),
}

/// A parsed `idle_after = "..."`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdleAfterArg {
    /// `"never"`.
    Never,
    /// A positive duration, in milliseconds.
    Millis(u64),
}

/// Reads `idle_after`'s value: `"never"`, or one or more `<integer><unit>` parts with the units
/// `ms`, `s`, `min`, `h` and `d` (`"90s"`, `"1h30min"`), adding up to more than zero.
pub(crate) fn parse_idle_after(text: &str) -> Result<IdleAfterArg, String> {
    const HELP: &str = "write a duration such as `\"90s\"`, `\"15min\"`, `\"1h30min\"` \
                        (units ms, s, min, h, d) or `\"never\"`";
    let text = text.trim();
    if text == "never" {
        return Ok(IdleAfterArg::Never);
    }
    if text.is_empty() {
        return Err(format!("`idle_after` is empty; {HELP}"));
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(format!(
                "`idle_after = \"{text}\"`: expected a number at `{rest}`; {HELP}"
            ));
        }
        let (number, tail) = rest.split_at(digits);
        let letters = tail.len()
            - tail
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .len();
        let (unit, tail) = tail.split_at(letters);
        let millis: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "min" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => {
                return Err(format!(
                    "`idle_after = \"{text}\"`: `{number}` has no unit; {HELP}"
                ));
            }
            other => {
                return Err(format!(
                    "`idle_after = \"{text}\"`: unknown unit `{other}`; {HELP}"
                ));
            }
        };
        let part = number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(millis))
            .and_then(|n| total.checked_add(n));
        total = part.ok_or_else(|| format!("`idle_after = \"{text}\"` is too long"))?;
        rest = tail;
    }
    if total == 0 {
        return Err(format!(
            "`idle_after = \"{text}\"` is zero: activations would be collected between calls; \
             give a positive duration, or `\"never\"`"
        ));
    }
    Ok(IdleAfterArg::Millis(total))
}

const EXPECTED: &str = "expected `name = \"...\"`, `implements = Trait`, `state = Type`, `reentrant`, `reference = Name`, `state_version = N`, `upgrade = path`, `idle_after = \"90s\"`, `role = \"sim\"`, `stateless_worker`, `stateless_worker = N` or `crate = \"path\"`";

impl GrainArgs {
    /// Parses the attribute's arguments, recording what is wrong in `errors`; missing or faulty
    /// arguments get placeholders so that the expansion can go on. `attr_span` is where errors
    /// about missing arguments point.
    pub(crate) fn parse(tokens: TokenStream, attr_span: Span, errors: &mut Errors) -> Self {
        let mut name: Option<LitStr> = None;
        let mut state: Option<Type> = None;
        let mut reentrant = false;
        let mut reference: Option<Ident> = None;
        let mut krate: Option<Path> = None;
        let mut state_version: Option<LitInt> = None;
        let mut upgrade: Option<Path> = None;
        let mut idle_after: Option<IdleAfterArg> = None;
        let mut role: Option<LitStr> = None;
        let mut implements: Option<Path> = None;
        let mut stateless_worker: Option<StatelessArg> = None;
        let mut unknown: Vec<syn::Error> = Vec::new();

        let parser = syn::meta::parser(|meta| {
            let key = meta
                .path
                .get_ident()
                .map(ToString::to_string)
                .unwrap_or_default();
            let duplicate = || meta.error(format!("duplicate grain argument `{key}`"));
            match key.as_str() {
                "name" => {
                    if name.is_some() {
                        return Err(duplicate());
                    }
                    name = Some(type_name(&meta)?);
                }
                "implements" => {
                    if implements.is_some() {
                        return Err(duplicate());
                    }
                    implements = Some(meta.value()?.parse().map_err(|e| {
                        syn::Error::new(
                            e.span(),
                            "`implements` takes the path of a `#[grain_interface]` trait: \
                             `implements = player_api::Player`",
                        )
                    })?);
                }
                "state" => {
                    if state.is_some() {
                        return Err(duplicate());
                    }
                    state = Some(meta.value()?.parse()?);
                }
                "reentrant" => {
                    if reentrant {
                        return Err(duplicate());
                    }
                    if !meta.input.is_empty() && !meta.input.peek(syn::Token![,]) {
                        return Err(meta.error("`reentrant` takes no value: write `reentrant`"));
                    }
                    reentrant = true;
                }
                "reference" => {
                    if reference.is_some() {
                        return Err(duplicate());
                    }
                    reference = Some(meta.value()?.parse()?);
                }
                "state_version" => {
                    if state_version.is_some() {
                        return Err(duplicate());
                    }
                    let lit: LitInt = meta.value()?.parse().map_err(|e| {
                        syn::Error::new(
                            e.span(),
                            "`state_version` takes an integer: `state_version = 2`",
                        )
                    })?;
                    if !matches!(lit.base10_parse::<u32>(), Ok(1..)) {
                        return Err(syn::Error::new(
                            lit.span(),
                            "`state_version` is a `u32` of at least 1",
                        ));
                    }
                    state_version = Some(lit);
                }
                "upgrade" => {
                    if upgrade.is_some() {
                        return Err(duplicate());
                    }
                    upgrade = Some(meta.value()?.parse()?);
                }
                "idle_after" => {
                    if idle_after.is_some() {
                        return Err(duplicate());
                    }
                    let lit: LitStr = meta.value()?.parse().map_err(|e| {
                        syn::Error::new(
                            e.span(),
                            "`idle_after` takes a string: `idle_after = \"90s\"` or `idle_after = \"never\"`",
                        )
                    })?;
                    idle_after = Some(
                        parse_idle_after(&lit.value())
                            .map_err(|message| syn::Error::new(lit.span(), message))?,
                    );
                }
                "role" => {
                    if role.is_some() {
                        return Err(duplicate());
                    }
                    let lit: LitStr = meta.value()?.parse().map_err(|e| {
                        syn::Error::new(e.span(), "`role` takes a string: `role = \"sim\"`")
                    })?;
                    if lit.value().trim().is_empty() {
                        return Err(syn::Error::new(lit.span(), "the role must not be empty"));
                    }
                    role = Some(lit);
                }
                "stateless_worker" => {
                    if stateless_worker.is_some() {
                        return Err(duplicate());
                    }
                    if meta.input.is_empty() || meta.input.peek(syn::Token![,]) {
                        stateless_worker = Some(StatelessArg::PerCore);
                    } else {
                        let lit: LitInt = meta.value()?.parse().map_err(|e| {
                            syn::Error::new(
                                e.span(),
                                "`stateless_worker` takes a maximum of activations per key and \
                                 silo: `stateless_worker = 4`, or no value for one per core",
                            )
                        })?;
                        if !matches!(lit.base10_parse::<usize>(), Ok(1..)) {
                            return Err(syn::Error::new(
                                lit.span(),
                                "`stateless_worker = N` needs at least 1 activation per key; \
                                 write `stateless_worker` alone for one per core",
                            ));
                        }
                        stateless_worker = Some(StatelessArg::Max(lit));
                    }
                }
                "crate" => {
                    if krate.is_some() {
                        return Err(duplicate());
                    }
                    let lit: LitStr = meta.value()?.parse()?;
                    krate = Some(lit.parse()?);
                }
                _ => {
                    let shown = quote::ToTokens::to_token_stream(&meta.path)
                        .to_string()
                        .replace(' ', "");
                    unknown
                        .push(meta.error(format!("unknown grain argument `{shown}`; {EXPECTED}")));
                    // Skip its value, if any, and go on with the other arguments.
                    while !meta.input.is_empty() && !meta.input.peek(syn::Token![,]) {
                        meta.input.parse::<TokenTree>()?;
                    }
                }
            }
            Ok(())
        });
        let parsed = parser.parse2(tokens);
        for error in unknown {
            errors.push(error);
        }
        if let Err(e) = parsed {
            // The arguments after the faulty one were not read: do not report them missing.
            errors.push(e);
        } else {
            if implements.is_some() {
                let from = "comes from the interface it implements";
                if let Some(name) = &name {
                    errors.spanned(
                        name,
                        format!("a grain with `implements` takes no `name`: its type name {from}"),
                    );
                }
                if let Some(reference) = &reference {
                    errors.spanned(
                        reference,
                        format!(
                            "a grain with `implements` takes no `reference`: its reference {from}"
                        ),
                    );
                }
            } else if name.is_none() {
                errors.at(
                    attr_span,
                    "missing `name = \"...\"`: the grain's stable type name, stored in its ids and on \
                     the wire (e.g. `#[grain(name = \"player\", state = PlayerState)]`)",
                );
            }
            if upgrade.is_some() && state_version.is_none() {
                errors.at(
                    attr_span,
                    "`upgrade = path` needs `state_version = N`: the version its steps lead to",
                );
            }
            if let (Some(_), Some(ty)) = (&stateless_worker, &state)
                && !is_unit(ty)
            {
                errors.push(syn::Error::new_spanned(
                    ty,
                    "a stateless worker has no state: it writes nothing to the store and its \
                     activations share nothing; remove `state = ..` (or write `state = ()`) and keep \
                     state in an ordinary grain the worker calls",
                ));
            }
            if stateless_worker.is_some() && (state_version.is_some() || upgrade.is_some()) {
                errors.at(
                    attr_span,
                    "a stateless worker has no state: `state_version` and `upgrade` do not apply",
                );
            }
            if state.is_none() && stateless_worker.is_none() {
                errors.at(
                    attr_span,
                    "missing `state = Type`: the grain's persisted state (`state = ()` for a grain \
                     without state)",
                );
            }
        }
        Self {
            name: name.unwrap_or_else(|| LitStr::new("__missing", attr_span)),
            state: state.unwrap_or_else(|| syn::parse_quote!(())),
            reentrant,
            reference,
            state_version,
            upgrade,
            idle_after,
            role,
            stateless_worker,
            krate: krate.unwrap_or_else(|| syn::parse_quote!(::granary)),
            implements,
        }
    }
}

/// Reads `name = "..."`: a non-empty string literal.
fn type_name(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<LitStr> {
    let lit: LitStr = meta.value()?.parse().map_err(|e| {
        syn::Error::new(
            e.span(),
            "`name` takes a string literal: `name = \"player\"`",
        )
    })?;
    if lit.value().is_empty() {
        return Err(syn::Error::new(
            lit.span(),
            "the grain type name must not be empty",
        ));
    }
    Ok(lit)
}

impl InterfaceArgs {
    /// Parses `#[grain_interface(...)]`'s arguments like [`GrainArgs::parse`].
    pub(crate) fn parse(tokens: TokenStream, attr_span: Span, errors: &mut Errors) -> Self {
        let mut name: Option<LitStr> = None;
        let mut krate: Option<Path> = None;
        let parser = syn::meta::parser(|meta| {
            if meta.path.is_ident("name") {
                if name.is_some() {
                    return Err(meta.error("duplicate grain interface argument `name`"));
                }
                name = Some(type_name(&meta)?);
            } else if meta.path.is_ident("crate") {
                if krate.is_some() {
                    return Err(meta.error("duplicate grain interface argument `crate`"));
                }
                let lit: LitStr = meta.value()?.parse()?;
                krate = Some(lit.parse()?);
            } else {
                let shown = quote::ToTokens::to_token_stream(&meta.path)
                    .to_string()
                    .replace(' ', "");
                return Err(meta.error(format!(
                    "unknown grain interface argument `{shown}`; expected `name = \"...\"` or \
                     `crate = \"path\"` (`state`, `reentrant` and the like belong on the \
                     implementing `#[grain(implements = ..)]`)"
                )));
            }
            Ok(())
        });
        match parser.parse2(tokens) {
            Err(e) => errors.push(e),
            Ok(()) if name.is_none() => errors.at(
                attr_span,
                "missing `name = \"...\"`: the stable type name of the grains implementing the \
                 interface, stored in their ids and on the wire \
                 (e.g. `#[grain_interface(name = \"player\")]`)",
            ),
            Ok(()) => {}
        }
        Self {
            name: name.unwrap_or_else(|| LitStr::new("__missing", attr_span)),
            krate: krate.unwrap_or_else(|| syn::parse_quote!(::granary)),
        }
    }
}

/// Whether `ty` is the unit type `()` (possibly in parentheses).
fn is_unit(ty: &Type) -> bool {
    match ty {
        Type::Tuple(tuple) => tuple.elems.is_empty(),
        Type::Paren(inner) => is_unit(&inner.elem),
        Type::Group(inner) => is_unit(&inner.elem),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
