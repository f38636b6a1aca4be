//! The typed reference (`PlayerRef` for `PlayerGrain`): a `GrainRef` with one async method
//! per grain method.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::Ident;
use syn::spanned::Spanned;

use super::{Paths, Surface, method_info};
use crate::parse::GrainMethod;

/// The reference struct, its trait impls and its methods.
pub(crate) fn expand(surface: &Surface<'_>, ident: &Ident, paths: &Paths) -> TokenStream {
    let Paths { core, serde, .. } = paths;
    let serde_crate = serde.to_string().replace(' ', "");
    let doc = format!(
        " A typed reference to a `{}` grain (`{}`): call its methods from anywhere in the \
         cluster. It serializes as its grain id.",
        surface.type_name, surface.owner
    );
    let debug_name = ident.to_string();
    let methods = surface.methods.iter().map(|m| method(m, core));
    quote! {
        #[doc = #doc]
        #[derive(::core::clone::Clone, #serde::Serialize, #serde::Deserialize)]
        #[serde(crate = #serde_crate, transparent)]
        pub struct #ident {
            inner: #core::GrainRef,
        }

        impl #ident {
            /// The grain this reference points at.
            #[must_use]
            pub fn id(&self) -> &#core::GrainId {
                self.inner.id()
            }

            /// The same reference with another timeout for the calls made through it.
            #[must_use]
            pub fn with_timeout(self, timeout: ::core::time::Duration) -> Self {
                Self { inner: self.inner.with_timeout(timeout) }
            }

            /// The same reference with `key` set to `value` in the request context of the
            /// calls made through it (see `GrainRef::with_context`).
            #[must_use]
            pub fn with_context(
                self,
                key: impl ::core::convert::Into<::std::string::String>,
                value: impl ::core::convert::Into<::std::string::String>,
            ) -> Self {
                Self { inner: self.inner.with_context(key, value) }
            }

            #(#methods)*
        }

        impl ::core::fmt::Debug for #ident {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_tuple(#debug_name).field(self.inner.id()).finish()
            }
        }

        impl ::core::cmp::PartialEq for #ident {
            fn eq(&self, other: &Self) -> bool {
                self.inner.id() == other.inner.id()
            }
        }

        impl ::core::cmp::Eq for #ident {}

        impl ::core::hash::Hash for #ident {
            fn hash<H: ::core::hash::Hasher>(&self, state: &mut H) {
                ::core::hash::Hash::hash(self.inner.id(), state);
            }
        }

        impl ::core::convert::From<#core::GrainRef> for #ident {
            fn from(inner: #core::GrainRef) -> Self {
                Self { inner }
            }
        }

        impl #core::TypedRef for #ident {
            fn grain_ref(&self) -> &#core::GrainRef {
                &self.inner
            }
        }
    }
}

/// The reference's method for one grain method: same name, arguments and docs, no `ctx`.
fn method(method: &GrainMethod, core: &TokenStream) -> TokenStream {
    let name = &method.name;
    let info = method_info(method, core);
    let output = &method.output;
    let names: Vec<&Ident> = method.args.iter().map(|a| &a.name).collect();
    let types = method.args.iter().map(|a| &a.ty);
    let docs = if method.docs.is_empty() {
        let doc = if method.one_way {
            format!(
                " Sends `{name}` to the grain; resolves once the call is accepted for delivery."
            )
        } else {
            format!(" Calls `{name}` on the grain and waits for its reply.")
        };
        quote!(#[doc = #doc])
    } else {
        let docs = &method.docs;
        quote!(#(#docs)*)
    };
    // Spanned so that unserializable types are reported at the grain method's parameters.
    let body = if method.one_way {
        quote_spanned!(method.params_span=> self.inner.send(&__GRANARY_METHOD, (#(#names,)*)).await)
    } else {
        quote_spanned!(method.params_span=> self.inner.call::<#output>(&__GRANARY_METHOD, (#(#names,)*)).await)
    };
    // With a domain error `E`, the caller gets `E`: the grain's own error decoded, or the
    // `CallError` converted by `E: From<CallError>`.
    let (body, error) = match &method.error {
        None => (body, quote!(#core::CallError)),
        Some(error) => (
            quote_spanned!(error.span()=> #body.map_err(#core::CallError::into_domain::<#error>)),
            quote!(#error),
        ),
    };
    quote! {
        #docs
        pub async fn #name(&self, #(#names: #types),*) -> ::core::result::Result<#output, #error> {
            static __GRANARY_METHOD: #core::MethodInfo = #info;
            #body
        }
    }
}
