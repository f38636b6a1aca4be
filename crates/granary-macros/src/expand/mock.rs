//! The typed mock (`PlayerMock` for `PlayerGrain`): what a test kit hands a test to declare how
//! the grain's methods answer, with one method per grain method taking a closure of the
//! method's own argument and result types (`granary_core::GrainMock`).

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::Ident;
use syn::spanned::Spanned;

use super::{Paths, Surface};
use crate::parse::GrainMethod;

/// The mock's name: the reference's without a trailing `Ref`, plus `Mock` (`PlayerRef` →
/// `PlayerMock`, `PlayerHandle` → `PlayerHandleMock`).
pub(crate) fn ident(reference: &Ident) -> Ident {
    let name = reference.to_string();
    let base = name
        .strip_suffix("Ref")
        .filter(|b| !b.is_empty())
        .unwrap_or(&name);
    format_ident!("{}Mock", base, span = reference.span())
}

/// The mock struct, its methods and `impl GrainMock for #target`.
pub(crate) fn expand(
    surface: &Surface<'_>,
    ident: &Ident,
    target: &Ident,
    paths: &Paths,
) -> TokenStream {
    let core = &paths.core;
    let Surface {
        type_name, owner, ..
    } = surface;
    let doc = format!(
        " A typed mock of `{type_name}` grains (`{owner}`), for test kits: declares how calls \
         to each method are answered, for one grain or for any. Get one from the test kit \
         (`GrainTest::mock`); each method takes a closure of the called grain's key and the \
         method's arguments that returns the method's result, and returns the mock to declare \
         more."
    );
    let methods = surface.methods.iter().map(|m| method(type_name, m, core));
    quote! {
        #[doc = #doc]
        #[derive(::core::clone::Clone, ::core::fmt::Debug)]
        pub struct #ident {
            scope: #core::MockScope,
        }

        impl #ident {
            #(#methods)*
        }

        impl ::core::convert::From<#core::MockScope> for #ident {
            fn from(scope: #core::MockScope) -> Self {
                Self { scope }
            }
        }

        impl #core::GrainMock for #target {
            type Mock = #ident;
        }
    }
}

/// The mock's method for one grain method: declares its reply from a typed closure.
fn method(type_name: &str, method: &GrainMethod, core: &TokenStream) -> TokenStream {
    let name = &method.name;
    let name_str = name.to_string();
    let output = &method.output;
    let bindings: Vec<Ident> = (0..method.args.len())
        .map(|i| format_ident!("__arg{}", i))
        .collect();
    let types: Vec<_> = method.args.iter().map(|a| &a.ty).collect();
    let what = format!("{type_name}.{name} arguments");
    let mut doc = format!(
        " Declares how `{name}` answers: `respond` gets the called grain's key and the call's \
         arguments and returns the method's result. A reply for one key wins over one for any \
         key; a later declaration replaces an earlier one."
    );
    if method.error.is_some() {
        doc.push_str(
            " An `Err` reaches the caller as the grain's own domain error would; to stand in for \
             a failed call, return the error converted from that `CallError`.",
        );
    }
    // A domain error travels as the grain's would: encoded inside `CallError::Domain`.
    let (error, run) = match &method.error {
        None => (
            quote!(#core::CallError),
            quote!(respond(grain.key(), #(#bindings),*)?),
        ),
        Some(error) => (
            quote!(#error),
            quote! {
                match respond(grain.key(), #(#bindings),*) {
                    ::core::result::Result::Ok(value) => value,
                    ::core::result::Result::Err(error) => {
                        return ::core::result::Result::Err(#core::CallError::domain_error(grain, &error));
                    }
                }
            },
        ),
    };
    // Spanned so that a closure of the wrong shape is reported against the grain method too.
    let bound = quote_spanned! {method.output.span()=>
        __Respond: ::core::ops::Fn(&#core::GrainKey, #(#types),*)
            -> ::core::result::Result<#output, #error>
            + ::core::marker::Send + ::core::marker::Sync + 'static
    };
    quote! {
        #[doc = #doc]
        pub fn #name<__Respond>(&self, respond: __Respond) -> &Self
        where
            #bound,
        {
            let responder: #core::MockResponder = ::std::sync::Arc::new(
                move |grain: &#core::GrainId, args: #core::Payload| {
                    let (#(#bindings,)*): (#(#types,)*) = args.take(#what)?;
                    let value = #run;
                    #core::Payload::reply_like(true, value)
                },
            );
            self.scope.declare(#name_str, responder);
            self
        }
    }
}
