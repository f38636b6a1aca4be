//! Code generation: the `Grain` impl (metadata, dispatch, hooks), in
//! [`reference`](mod@reference) the typed reference and in [`mock`](mod@mock) the typed mock
//! for test kits, in [`interface`](mod@interface) a `#[grain_interface]` trait and a grain's
//! implementation of it, in [`observer`](mod@observer) an `#[observer]` trait.
//!
//! Errors do not stop the expansion: what could be read is still generated next to the
//! `compile_error!`s (see [`Errors`]).

mod interface;
mod mock;
mod observer;
mod reference;

pub(crate) use interface::grain_interface;
pub(crate) use observer::observer;

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Ident, Item, LitInt};

use crate::args::{GrainArgs, IdleAfterArg, StatelessArg};
use crate::errors::Errors;
use crate::parse::{GrainImpl, GrainMethod, Hook};

/// Expands `#[grain(args)] item` into the item (helper attributes stripped), the `Grain`
/// impl, the typed reference, the typed mock and the errors found.
pub(crate) fn grain(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut item: Item = match syn::parse2(item) {
        Ok(item) => item,
        Err(e) => return e.to_compile_error(),
    };
    let Item::Impl(imp) = &mut item else {
        let error = syn::Error::new(
            item.span(),
            "#[grain] goes on the impl block of a grain type: \
             `#[grain(name = \"player\", state = PlayerState)] impl PlayerGrain { .. }`",
        );
        let error = error.to_compile_error();
        return quote!(#item #error);
    };
    let mut errors = Errors::default();
    let grain = GrainImpl::parse(imp, &mut errors);
    let args = GrainArgs::parse(args, Span::call_site(), &mut errors);
    let generated = grain.map(|grain| {
        let paths = Paths::new(&args.krate);
        if let Some(trait_path) = &args.implements {
            return interface::implementation(&args, &grain, trait_path, &paths);
        }
        let ref_ident = reference_ident(&args, &grain);
        let surface = Surface {
            type_name: args.name.value(),
            owner: &grain.self_ident,
            methods: &grain.methods,
        };
        let grain_impl = grain_impl(&args, &grain, &Interface::Own(&ref_ident), &paths);
        let reference = reference::expand(&surface, &ref_ident, &paths);
        let mock = mock::expand(
            &surface,
            &mock::ident(&ref_ident),
            &grain.self_ident,
            &paths,
        );
        quote!(#grain_impl #reference #mock)
    });
    let errors = errors.into_compile_errors();
    quote!(#item #generated #errors)
}

/// The paths generated code names things through, rooted at the facade (or `crate = ".."`).
pub(crate) struct Paths {
    /// `granary_core`, as `::granary::__private::core`.
    core: TokenStream,
    /// `futures::future::BoxFuture`.
    box_future: TokenStream,
    /// The `serde` crate.
    serde: TokenStream,
}

impl Paths {
    pub(crate) fn new(krate: &syn::Path) -> Self {
        Self {
            core: quote!(#krate::__private::core),
            box_future: quote!(#krate::__private::BoxFuture),
            serde: quote!(#krate::__private::serde),
        }
    }
}

/// What the typed reference and the mock are generated from: a `#[grain]` impl block or a
/// `#[grain_interface]` trait.
pub(crate) struct Surface<'a> {
    /// The stable type name (`"player"`).
    pub(crate) type_name: String,
    /// What declares the methods, named in docs: `PlayerGrain` or the trait `Player`.
    pub(crate) owner: &'a Ident,
    /// The callable methods.
    pub(crate) methods: &'a [GrainMethod],
}

/// Where a grain's name, methods and reference come from.
pub(crate) enum Interface<'a> {
    /// Its own `#[grain]` block: `name = ..`, its methods, the reference generated next to it.
    Own(&'a Ident),
    /// The `#[grain_interface]` whose reference (`player_api::PlayerRef`) is this path.
    Implements(&'a syn::Path),
}

/// `reference = Name`, or the grain's name with `Grain` stripped plus `Ref`.
fn reference_ident(args: &GrainArgs, grain: &GrainImpl) -> Ident {
    if let Some(name) = &args.reference {
        return name.clone();
    }
    let name = grain.self_ident.to_string();
    let base = name
        .strip_suffix("Grain")
        .filter(|b| !b.is_empty())
        .unwrap_or(&name);
    format_ident!("{}Ref", base, span = grain.self_ident.span())
}

/// A method id as a readable hex literal (`0xd902_76aa_u32`).
fn id_literal(id: u32) -> LitInt {
    LitInt::new(
        &format!("0x{:04x}_{:04x}_u32", id >> 16, id & 0xffff),
        Span::call_site(),
    )
}

/// The `MethodInfo` of `method`, as a constant expression.
fn method_info(method: &GrainMethod, core: &TokenStream) -> TokenStream {
    let name = method.name.to_string();
    let id = id_literal(method.id);
    let (read_only, one_way) = (method.read_only, method.one_way);
    quote! {
        #core::MethodInfo { name: #name, id: #core::MethodId(#id), read_only: #read_only, one_way: #one_way }
    }
}

pub(crate) fn grain_impl(
    args: &GrainArgs,
    grain: &GrainImpl,
    interface: &Interface<'_>,
    paths: &Paths,
) -> TokenStream {
    let Paths {
        core, box_future, ..
    } = paths;
    let self_ident = &grain.self_ident;
    let (state, reentrant) = (&args.state, args.reentrant);
    let (type_name, methods, ref_type) = match interface {
        Interface::Own(ref_ident) => {
            let name = &args.name;
            let infos = grain.methods.iter().map(|m| method_info(m, core));
            (quote!(#name), quote!(&[#(#infos),*]), quote!(#ref_ident))
        }
        // The interface's own name and methods (flags included): callers through its
        // reference and through this grain's agree on the wire by construction.
        Interface::Implements(reference) => (
            quote!(<#reference as #core::GrainInterface>::TYPE_NAME),
            quote!(<#reference as #core::GrainInterface>::METHODS),
            quote!(#reference),
        ),
    };
    let label = match interface {
        Interface::Own(_) => args.name.value(),
        Interface::Implements(reference) => quote!(#reference).to_string().replace(' ', ""),
    };
    let arms = grain.methods.iter().map(|m| dispatch_arm(&label, m, core));
    let unused = grain
        .methods
        .is_empty()
        .then(|| quote!(let _ = (ctx, args);));
    let result = quote!(::core::result::Result<(), #core::CallError>);
    let on_activate = grain.on_activate.as_ref().map(|hook| {
        let call = hook_call(hook, &quote!(ctx));
        quote! {
            fn on_activate<'a>(&'a self, ctx: &'a #core::GrainContext<Self>) -> #box_future<'a, #result> {
                #call
            }
        }
    });
    let on_deactivate = grain.on_deactivate.as_ref().map(|hook| {
        let call = hook_call(hook, &quote!(ctx));
        quote! {
            fn on_deactivate<'a>(&'a self, ctx: &'a #core::GrainContext<Self>) -> #box_future<'a, #result> {
                #call
            }
        }
    });
    let on_timer = grain.on_timer.as_ref().map(|hook| {
        let call = hook_call(hook, &quote!(ctx, name));
        quote! {
            fn on_timer<'a>(
                &'a self,
                ctx: &'a #core::GrainContext<Self>,
                name: &'a str,
            ) -> #box_future<'a, #result> {
                #call
            }
        }
    });
    let on_reminder = grain.on_reminder.as_ref().map(|hook| {
        let call = hook_call(hook, &quote!(ctx, name, tick));
        quote! {
            fn on_reminder<'a>(
                &'a self,
                ctx: &'a #core::GrainContext<Self>,
                name: &'a str,
                tick: #core::ReminderTick,
            ) -> #box_future<'a, #result> {
                #call
            }
        }
    });
    let state_version = args
        .state_version
        .as_ref()
        .map(|v| quote!(const STATE_VERSION: u32 = #v;));
    let idle_after = args.idle_after.map(|after| {
        let value = match after {
            IdleAfterArg::Never => quote!(#core::IdleAfter::Never),
            IdleAfterArg::Millis(ms) => {
                quote!(#core::IdleAfter::After(::core::time::Duration::from_millis(#ms)))
            }
        };
        quote!(const IDLE_AFTER: #core::IdleAfter = #value;)
    });
    let role = args
        .role
        .as_ref()
        .map(|role| quote!(const ROLE: ::core::option::Option<&'static str> = ::core::option::Option::Some(#role);));
    let stateless = args.stateless_worker.as_ref().map(|arg| {
        let value = match arg {
            StatelessArg::PerCore => quote!(#core::StatelessWorker::PerCore),
            StatelessArg::Max(n) => {
                // Unsuffixed: `4u32` must still give a `usize`.
                let n = LitInt::new(n.base10_digits(), n.span());
                quote!(#core::StatelessWorker::Max(#n))
            }
        };
        quote!(const STATELESS_WORKER: ::core::option::Option<#core::StatelessWorker> = ::core::option::Option::Some(#value);)
    });
    let upgrade = args.upgrade.as_ref().map(|path| {
        quote! {
            fn upgrade_state(
                from: u32,
                blob: &#core::state_codec::StateBlob,
            ) -> ::core::result::Result<#core::state_codec::StateBlob, ::std::string::String> {
                #path(from, blob)
            }
        }
    });
    quote! {
        impl #core::Grain for #self_ident {
            const TYPE_NAME: &'static str = #type_name;
            const REENTRANT: bool = #reentrant;
            #state_version
            #idle_after
            #role
            #stateless
            const METHODS: &'static [#core::MethodInfo] = #methods;
            type State = #state;
            type Ref = #ref_type;

            fn invoke<'a>(
                &'a self,
                ctx: &'a #core::GrainContext<Self>,
                method: #core::MethodId,
                args: #core::Payload,
            ) -> #box_future<'a, ::core::result::Result<#core::Payload, #core::CallError>> {
                #unused
                match method.0 {
                    #(#arms)*
                    _ => ::std::boxed::Box::pin(::core::future::ready(::core::result::Result::Err(
                        #core::CallError::UnknownMethod {
                            grain_type: ::std::string::String::from(<Self as #core::Grain>::TYPE_NAME),
                            method: method.0,
                        },
                    ))),
                }
            }

            #on_activate
            #on_deactivate
            #on_timer
            #on_reminder
            #upgrade
        }
    }
}

/// One `match` arm of `invoke`: decode the argument tuple, run the method, encode the reply
/// the way the request came.
/// `label` names the grain type in decoding errors.
fn dispatch_arm(label: &str, method: &GrainMethod, core: &TokenStream) -> TokenStream {
    let id = id_literal(method.id);
    let name = &method.name;
    let bindings: Vec<Ident> = (0..method.args.len())
        .map(|i| format_ident!("__arg{}", i))
        .collect();
    let types = method.args.iter().map(|a| &a.ty);
    let what = format!("{label}.{} arguments", method.name);
    // Spanned so that an argument or result type that is not serializable is reported at the
    // method's parameters or result, not at the attribute.
    let take = quote_spanned!(method.params_span=> args.take(#what));
    let reply = quote_spanned!(method.output.span()=> #core::Payload::reply_like(encoded, value));
    // A domain error travels encoded inside `CallError::Domain`.
    let run = match &method.error {
        None => quote!(Self::#name(self, ctx, #(#bindings),*).await?),
        Some(error) => {
            let wrap =
                quote_spanned!(error.span()=> #core::CallError::domain_error(ctx.id(), &error));
            quote! {
                match Self::#name(self, ctx, #(#bindings),*).await {
                    ::core::result::Result::Ok(value) => value,
                    ::core::result::Result::Err(error) => return ::core::result::Result::Err(#wrap),
                }
            }
        }
    };
    quote! {
        #id => ::std::boxed::Box::pin(async move {
            let encoded = args.is_encoded();
            let (#(#bindings,)*): (#(#types,)*) = #take?;
            let value = #run;
            #reply
        }),
    }
}

/// `Box::pin(Self::hook(self, <params>))`, spanned so that a signature mismatch points at the
/// hook's return type.
fn hook_call(hook: &Hook, params: &TokenStream) -> TokenStream {
    let name = &hook.name;
    let pin = quote_spanned!(hook.output_span=> ::std::boxed::Box::pin);
    quote!(#pin(Self::#name(self, #params)))
}
