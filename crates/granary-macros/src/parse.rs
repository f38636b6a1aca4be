//! Reading a `#[grain]` impl block: which functions are grain methods and which are lifecycle
//! hooks, with their signatures checked and the helper attributes stripped.
//!
//! Everything here works on `syn` trees only, so it is unit-tested without a compiler.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::visit::Visit;
use syn::{
    Attribute, FnArg, GenericArgument, GenericParam, Ident, ImplItem, ImplItemFn, ItemImpl, Pat,
    PathArguments, ReturnType, Signature, Type, Visibility,
};

use crate::errors::Errors;

/// A checked `#[grain]` impl block.
pub(crate) struct GrainImpl {
    /// The grain type's name (`PlayerGrain`).
    pub(crate) self_ident: Ident,
    /// The grain methods, in source order.
    pub(crate) methods: Vec<GrainMethod>,
    /// `#[on_activate]`, if present.
    pub(crate) on_activate: Option<Hook>,
    /// `#[on_deactivate]`, if present.
    pub(crate) on_deactivate: Option<Hook>,
    /// `#[on_timer]`, if present.
    pub(crate) on_timer: Option<Hook>,
    /// `#[on_reminder]`, if present.
    pub(crate) on_reminder: Option<Hook>,
}

/// One grain method: a `pub async fn(&self, ctx: &GrainContext<Self>, args..) -> Result<T>`.
pub(crate) struct GrainMethod {
    /// The method's name.
    pub(crate) name: Ident,
    /// [`method_id`] of the name.
    pub(crate) id: u32,
    /// The method's `#[doc]` attributes, copied onto the reference's method.
    pub(crate) docs: Vec<Attribute>,
    /// The arguments after `ctx`.
    pub(crate) args: Vec<Arg>,
    /// `T` of the method's `Result<T>`.
    pub(crate) output: Type,
    /// `E` of the method's `Result<T, E>` when it is the grain's own (domain) error type,
    /// not `CallError`.
    pub(crate) error: Option<Type>,
    /// Declared `#[read_only]`.
    pub(crate) read_only: bool,
    /// Declared `#[one_way]`.
    pub(crate) one_way: bool,
    /// The span of the parameter list, where unserializable arguments are reported.
    pub(crate) params_span: Span,
    /// The whole return type as written (`Result<u32>`), for the interface trait's methods.
    pub(crate) result: Type,
}

/// One argument of a grain method.
pub(crate) struct Arg {
    /// The parameter's name where it is a plain identifier not starting with `_`, `argN`
    /// otherwise (N counts from the first argument after `ctx`).
    pub(crate) name: Ident,
    /// Its (owned) type.
    pub(crate) ty: Type,
}

/// A lifecycle hook method.
pub(crate) struct Hook {
    /// The user's method.
    pub(crate) name: Ident,
    /// The span of its return type, where a mismatch is reported.
    pub(crate) output_span: Span,
}

/// The 32-bit FNV-1a hash of a method name: the same function as `granary_core::MethodId::of`.
pub(crate) fn method_id(name: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// Names the generated reference defines itself (or that a method would shadow confusingly,
/// `clone`), so grain methods cannot take them.
pub(crate) const RESERVED: [&str; 3] = ["id", "with_timeout", "clone"];

const OWNED_ARG: &str = "grain method arguments travel between silos and must be owned, serializable types \
                         (use `String` instead of `&str`, `Vec<T>` instead of `&[T]`)";
const OWNED_OUTPUT: &str =
    "grain method results travel between silos and must be owned, serializable types";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Marker {
    ReadOnly,
    OneWay,
    OnActivate,
    OnDeactivate,
    OnTimer,
    OnReminder,
}

impl Marker {
    /// The marker `attr` is, if it is one.
    pub(crate) fn of(attr: &Attribute) -> Option<Self> {
        let ident = attr.path().get_ident()?;
        Some(match ident.to_string().as_str() {
            "read_only" => Self::ReadOnly,
            "one_way" => Self::OneWay,
            "on_activate" => Self::OnActivate,
            "on_deactivate" => Self::OnDeactivate,
            "on_timer" => Self::OnTimer,
            "on_reminder" => Self::OnReminder,
            _ => return None,
        })
    }

    /// The attribute's name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::ReadOnly => "read_only",
            Self::OneWay => "one_way",
            Self::OnActivate => "on_activate",
            Self::OnDeactivate => "on_deactivate",
            Self::OnTimer => "on_timer",
            Self::OnReminder => "on_reminder",
        }
    }

    /// Whether it marks a lifecycle hook.
    pub(crate) fn is_hook(self) -> bool {
        matches!(
            self,
            Self::OnActivate | Self::OnDeactivate | Self::OnTimer | Self::OnReminder
        )
    }

    /// The signature a hook must have, for error messages.
    fn hook_signature(self) -> &'static str {
        match self {
            Self::OnTimer => {
                "async fn tick(&self, ctx: &GrainContext<Self>, name: &str) -> Result<()>"
            }
            Self::OnReminder => {
                "async fn remind(&self, ctx: &GrainContext<Self>, name: &str, tick: ReminderTick) -> Result<()>"
            }
            _ => "async fn name(&self, ctx: &GrainContext<Self>) -> Result<()>",
        }
    }
}

impl GrainImpl {
    /// Checks `item`, recording what is wrong in `errors`, and strips the helper attributes
    /// from it. Faulty methods and hooks are left out of the result; `None` only when the
    /// impl block itself cannot be a grain (a trait impl, a generic type).
    pub(crate) fn parse(item: &mut ItemImpl, errors: &mut Errors) -> Option<Self> {
        let self_ident = self_ident(item, errors);
        let mut grain = Self {
            // Never seen when `self_ident` is `None`: the result is dropped below.
            self_ident: self_ident
                .clone()
                .unwrap_or_else(|| Ident::new("__Invalid", Span::call_site())),
            methods: Vec::new(),
            on_activate: None,
            on_deactivate: None,
            on_timer: None,
            on_reminder: None,
        };
        for impl_item in &mut item.items {
            if let ImplItem::Fn(function) = impl_item {
                grain.add_fn(function, errors);
            }
        }
        check_ids(&mut grain.methods, errors);
        self_ident.is_some().then_some(grain)
    }

    fn add_fn(&mut self, function: &mut ImplItemFn, errors: &mut Errors) {
        let markers = take_markers(&mut function.attrs, errors);
        let hooks: Vec<&(Marker, Attribute)> =
            markers.iter().filter(|(m, _)| m.is_hook()).collect();
        let flag = |wanted: Marker| {
            markers
                .iter()
                .find(|(m, _)| *m == wanted)
                .map(|(_, attr)| attr)
        };

        if let Some((marker, attr)) = hooks.first().copied() {
            let marker = *marker;
            if let Some((other, other_attr)) = hooks.get(1).copied() {
                let (a, b) = (marker.name(), other.name());
                errors.spanned(
                    other_attr,
                    format!("a method can be only one hook, not both #[{a}] and #[{b}]"),
                );
                return;
            }
            for plain in [Marker::ReadOnly, Marker::OneWay] {
                if let Some(plain_attr) = flag(plain) {
                    let (a, b) = (plain.name(), marker.name());
                    errors.spanned(
                        plain_attr,
                        format!("#[{a}] marks grain methods; a #[{b}] hook cannot have it"),
                    );
                }
            }
            let slot = match marker {
                Marker::OnActivate => &mut self.on_activate,
                Marker::OnDeactivate => &mut self.on_deactivate,
                Marker::OnReminder => &mut self.on_reminder,
                _ => &mut self.on_timer,
            };
            if let Some(first) = slot {
                let name = marker.name();
                let message = format!(
                    "duplicate #[{name}]: `{}` is already the grain's {name} hook",
                    first.name
                );
                errors.spanned(attr, message);
                return;
            }
            if let Some(hook) = check_hook(&function.sig, marker, errors) {
                *slot = Some(hook);
                function.attrs.push(syn::parse_quote!(
                    #[allow(clippy::unused_async, reason = "#[grain] hooks are `async fn`s by definition")]
                ));
            }
            return;
        }

        let is_candidate = matches!(function.vis, Visibility::Public(_))
            && function.sig.asyncness.is_some()
            && function.sig.receiver().is_some();
        if is_candidate {
            if let Some(mut method) =
                check_method(&function.sig, flag(Marker::OneWay).is_some(), true, errors)
            {
                method.docs = function
                    .attrs
                    .iter()
                    .filter(|a| a.path().is_ident("doc"))
                    .cloned()
                    .collect();
                method.read_only = flag(Marker::ReadOnly).is_some();
                self.methods.push(method);
                // `pub async` is how a grain method is declared: it is never a reason to
                // narrow the visibility (on a grain type private to its crate) or to drop the
                // `async` (in a method that happens not to await).
                function.attrs.push(syn::parse_quote!(
                    #[allow(
                        unreachable_pub,
                        clippy::unused_async,
                        reason = "#[grain] methods are `pub async fn`s by definition"
                    )]
                ));
            }
            return;
        }
        for plain in [Marker::ReadOnly, Marker::OneWay] {
            if let Some(attr) = flag(plain) {
                let name = plain.name();
                errors.spanned(
                    attr,
                    format!(
                        "#[{name}] marks grain methods, which are `pub async fn`s taking `&self`"
                    ),
                );
            }
        }
    }
}

/// The grain type's identifier; reports trait impls, generics and non-path self types.
fn self_ident(item: &ItemImpl, errors: &mut Errors) -> Option<Ident> {
    let mut ok = true;
    if let Some((_, path, _)) = &item.trait_ {
        ok = false;
        errors.spanned(
            path,
            "#[grain] goes on the inherent impl block of the grain type, not on a trait impl",
        );
    }
    if !item.generics.params.is_empty() {
        ok = false;
        errors.spanned(
            &item.generics,
            "grain types cannot be generic: a grain type has one stable name",
        );
    }
    if let Type::Path(path) = &*item.self_ty
        && path.qself.is_none()
        && let Some(last) = path.path.segments.last()
        && last.arguments.is_none()
    {
        return ok.then(|| last.ident.clone());
    }
    errors.spanned(
        &item.self_ty,
        "#[grain] expects the grain type to be a plain struct name, e.g. `impl PlayerGrain`",
    );
    None
}

/// Removes the helper attributes from `attrs` and returns them.
pub(crate) fn take_markers(
    attrs: &mut Vec<Attribute>,
    errors: &mut Errors,
) -> Vec<(Marker, Attribute)> {
    let mut markers: Vec<(Marker, Attribute)> = Vec::new();
    attrs.retain(|attr| {
        let Some(marker) = Marker::of(attr) else {
            return true;
        };
        if !matches!(attr.meta, syn::Meta::Path(_)) {
            errors.spanned(attr, format!("#[{}] takes no arguments", marker.name()));
        } else if markers.iter().any(|(m, _)| *m == marker) {
            errors.spanned(attr, format!("#[{}] is given twice", marker.name()));
        } else {
            markers.push((marker, attr.clone()));
        }
        false
    });
    markers
}

/// Checks a grain method's signature: `&self`, the context when `with_ctx` (an interface's
/// methods have none), owned arguments, a `Result` return.
pub(crate) fn check_method(
    sig: &Signature,
    one_way: bool,
    with_ctx: bool,
    errors: &mut Errors,
) -> Option<GrainMethod> {
    let name = sig.ident.clone();
    let mut ok = check_receiver(sig, errors, || "grain methods take `&self`".to_owned());
    if RESERVED.contains(&name.to_string().as_str()) {
        ok = false;
        errors.at(
            name.span(),
            format!(
                "`{name}` is a method of the generated reference itself; rename the grain method"
            ),
        );
    }
    for param in &sig.generics.params {
        if !matches!(param, GenericParam::Lifetime(_)) {
            ok = false;
            errors.spanned(
                param,
                "grain methods cannot be generic: each method has one wire signature",
            );
        }
    }
    if with_ctx {
        ok &= check_ctx(
            sig,
            errors,
            "the second parameter of a grain method must be the grain context: `ctx: &GrainContext<Self>`",
        );
    }

    let skip = if with_ctx { 2 } else { 1 };
    let mut args = Vec::new();
    for (i, input) in sig.inputs.iter().enumerate().skip(skip) {
        let FnArg::Typed(typed) = input else { continue };
        if let Err(e) = check_owned(&typed.ty, OWNED_ARG) {
            ok = false;
            errors.push(e);
        }
        let name = match &*typed.pat {
            Pat::Ident(p) if p.subpat.is_none() && !p.ident.to_string().starts_with('_') => {
                p.ident.clone()
            }
            _ => Ident::new(&format!("arg{}", i - skip), typed.pat.span()),
        };
        args.push(Arg {
            name,
            ty: (*typed.ty).clone(),
        });
    }

    let output = match result_ok_type(&sig.output) {
        Some(output) => {
            if let Err(e) = check_owned(output, OWNED_OUTPUT) {
                ok = false;
                errors.push(e);
            }
            if one_way && !is_unit(output) {
                ok = false;
                errors.spanned(
                    output,
                    "#[one_way] methods return `Result<()>`: their caller gets no reply",
                );
            }
            output.clone()
        }
        None => {
            output_error(
                sig,
                errors,
                "grain methods return `Result<T>` (`granary::Result`, or `Result<T, CallError>`), \
                 or `Result<T, E>` with a domain error `E`",
            );
            return None;
        }
    };
    let error = domain_error_type(&sig.output).cloned();
    if let Some(error) = &error {
        if let Err(e) = check_owned(error, OWNED_OUTPUT) {
            ok = false;
            errors.push(e);
        }
        if one_way {
            ok = false;
            errors.spanned(
                error,
                "#[one_way] methods return `Result<()>`: their caller gets no reply, so no \
                 domain error either",
            );
        }
    }
    ok.then(|| GrainMethod {
        id: method_id(&name.to_string()),
        name,
        docs: Vec::new(),
        args,
        output,
        error,
        read_only: false,
        one_way,
        params_span: sig.paren_token.span.join(),
        result: match &sig.output {
            ReturnType::Type(_, ty) => (**ty).clone(),
            ReturnType::Default => syn::parse_quote!(()),
        },
    })
}

fn check_hook(sig: &Signature, marker: Marker, errors: &mut Errors) -> Option<Hook> {
    let name = marker.name();
    let expected = marker.hook_signature();
    let message = || format!("#[{name}] hooks have the signature `{expected}`");
    let mut ok = true;
    if sig.asyncness.is_none() {
        ok = false;
        errors.at(sig.fn_token.span, message());
    }
    ok &= check_receiver(sig, errors, message);
    ok &= check_ctx(sig, errors, &message());
    let wanted = match marker {
        Marker::OnTimer => 3,
        Marker::OnReminder => 4,
        _ => 2,
    };
    if let Some(extra) = sig.inputs.iter().nth(wanted) {
        ok = false;
        errors.spanned(extra, message());
    } else if sig.inputs.len() < wanted && sig.inputs.len() >= 2 {
        ok = false;
        errors.at(sig.paren_token.span.join(), message());
    }
    if !result_ok_type(&sig.output).is_some_and(is_unit) {
        ok = false;
        output_error(sig, errors, &message());
    }
    ok.then(|| Hook {
        name: sig.ident.clone(),
        output_span: output_span(sig),
    })
}

/// Checks that the receiver is `&self`; reports what it is otherwise.
fn check_receiver(sig: &Signature, errors: &mut Errors, message: impl Fn() -> String) -> bool {
    match sig.receiver() {
        Some(r) if r.reference.is_some() && r.mutability.is_none() && r.colon_token.is_none() => {
            true
        }
        Some(r) if r.mutability.is_some() && r.reference.is_some() => {
            errors.spanned(
                r,
                "grain methods take `&self`, not `&mut self`: keep mutable data in the state \
                 (`ctx.state()`) or behind a lock",
            );
            false
        }
        Some(r) => {
            errors.spanned(r, message());
            false
        }
        None => {
            errors.at(sig.paren_token.span.join(), message());
            false
        }
    }
}

/// Checks that the second parameter is `&GrainContext<..>`.
fn check_ctx(sig: &Signature, errors: &mut Errors, message: &str) -> bool {
    let Some(param) = sig.inputs.iter().nth(1) else {
        errors.at(sig.paren_token.span.join(), message);
        return false;
    };
    let is_ctx = match param {
        FnArg::Typed(typed) => match &*typed.ty {
            Type::Reference(r) if r.mutability.is_none() => {
                matches!(&*r.elem, Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == "GrainContext"))
            }
            _ => false,
        },
        FnArg::Receiver(_) => false,
    };
    if !is_ctx {
        errors.spanned(param, message);
    }
    is_ctx
}

/// The type arguments of a return type written `Result<…>` (any path ending in `Result`).
fn result_arguments(output: &ReturnType) -> Option<impl Iterator<Item = &GenericArgument>> {
    let ReturnType::Type(_, ty) = output else {
        return None;
    };
    let Type::Path(path) = &**ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    Some(args.args.iter())
}

/// `T` of a return type written `Result<T>` or `Result<T, E>` (any path ending in `Result`).
fn result_ok_type(output: &ReturnType) -> Option<&Type> {
    match result_arguments(output)?.next()? {
        GenericArgument::Type(ty) => Some(ty),
        _ => None,
    }
}

/// `E` of a return type written `Result<T, E>` where `E` is not `CallError` (by its last path
/// segment): a domain error.
fn domain_error_type(output: &ReturnType) -> Option<&Type> {
    let GenericArgument::Type(error) = result_arguments(output)?.nth(1)? else {
        return None;
    };
    let is_call_error = matches!(
        error,
        Type::Path(p) if p.qself.is_none()
            && p.path.segments.last().is_some_and(|s| s.ident == "CallError")
    );
    (!is_call_error).then_some(error)
}

fn is_unit(ty: &Type) -> bool {
    matches!(ty, Type::Tuple(t) if t.elems.is_empty())
}

/// Reports `message` at the return type, or where it is missing.
fn output_error(sig: &Signature, errors: &mut Errors, message: &str) {
    match &sig.output {
        ReturnType::Type(_, ty) => errors.spanned(ty, message),
        ReturnType::Default => errors.at(sig.paren_token.span.close(), message),
    }
}

/// Where a hook's return type mismatch is reported.
fn output_span(sig: &Signature) -> Span {
    match &sig.output {
        ReturnType::Type(_, ty) => ty.span(),
        ReturnType::Default => sig.paren_token.span.close(),
    }
}

/// Rejects borrowed types, `impl Trait`, non-`'static` lifetimes and `Self` anywhere inside `ty`.
fn check_owned(ty: &Type, message: &str) -> syn::Result<()> {
    struct Owned<'m> {
        message: &'m str,
        error: Option<syn::Error>,
    }
    impl Owned<'_> {
        fn fail(&mut self, tokens: impl quote::ToTokens, message: &str) {
            if self.error.is_none() {
                self.error = Some(syn::Error::new_spanned(tokens, message));
            }
        }
    }
    impl<'ast> Visit<'ast> for Owned<'_> {
        fn visit_type_reference(&mut self, node: &'ast syn::TypeReference) {
            self.fail(node, self.message);
        }
        fn visit_type_impl_trait(&mut self, node: &'ast syn::TypeImplTrait) {
            self.fail(node, self.message);
        }
        fn visit_lifetime(&mut self, node: &'ast syn::Lifetime) {
            if node.ident != "static" {
                self.fail(node, self.message);
            }
        }
        fn visit_path(&mut self, node: &'ast syn::Path) {
            if node.segments.first().is_some_and(|s| s.ident == "Self") {
                let message =
                    "write the type out: `Self` would name the generated reference, not the grain";
                self.fail(node, message);
            }
            syn::visit::visit_path(self, node);
        }
    }
    let mut visitor = Owned {
        message,
        error: None,
    };
    visitor.visit_type(ty);
    visitor.error.map_or(Ok(()), Err)
}

/// Reports (and drops) methods whose ids collide with an earlier one.
pub(crate) fn check_ids(methods: &mut Vec<GrainMethod>, errors: &mut Errors) {
    let mut kept: Vec<GrainMethod> = Vec::with_capacity(methods.len());
    for method in methods.drain(..) {
        if let Some(earlier) = kept.iter().find(|m| m.id == method.id) {
            errors.at(
                method.name.span(),
                format!(
                    "the method ids of `{}` and `{}` collide (FNV-1a {:#010x}); rename one of them",
                    earlier.name, method.name, method.id
                ),
            );
        } else {
            kept.push(method);
        }
    }
    *methods = kept;
}

#[cfg(test)]
mod tests;
