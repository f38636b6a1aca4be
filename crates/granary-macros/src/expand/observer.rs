//! Observer interfaces: `#[observer]` on a trait declares what grains may call on an object
//! a client serves. It generates the trait the object implements (the methods as written, no
//! context), the typed reference and mock (as for a grain interface), `impl GrainInterface`
//! and `impl ObserverInterface` for the reference, and `Ref::object(..)`, which wraps an
//! object with the dispatch of its methods.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Ident, Item, ItemTrait};

use super::interface::read_trait;
use super::{Paths, Surface, id_literal, method_info, mock, reference};
use crate::args::InterfaceArgs;
use crate::errors::Errors;
use crate::parse::GrainMethod;

/// Expands `#[observer(name = "match_watcher")] trait MatchWatcher { .. }`.
pub(crate) fn observer(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut item: Item = match syn::parse2(item) {
        Ok(item) => item,
        Err(e) => return e.to_compile_error(),
    };
    let Item::Trait(item) = &mut item else {
        let error = syn::Error::new(
            item.span(),
            "#[observer] goes on a trait declaring what grains call on a client's object: \
             `#[observer(name = \"match_watcher\")] pub trait MatchWatcher { .. }`",
        );
        let error = error.to_compile_error();
        return quote!(#item #error);
    };
    let mut errors = Errors::default();
    let args = InterfaceArgs::parse(args, Span::call_site(), &mut errors);
    let paths = Paths::new(&args.krate);
    let methods = read_trait(item, &mut errors);
    let the_trait = trait_for_objects(item, &methods);
    let ref_ident = format_ident!("{}Ref", item.ident, span = item.ident.span());
    let type_name = format!("observer:{}", args.name.value());
    let surface = Surface {
        type_name: type_name.clone(),
        owner: &item.ident,
        methods: &methods,
    };
    let reference = reference::expand(&surface, &ref_ident, &paths);
    let mock = mock::expand(&surface, &mock::ident(&ref_ident), &ref_ident, &paths);
    let object = object_fn(&item.ident, &ref_ident, &type_name, &methods, &paths);
    let core = &paths.core;
    let infos = methods.iter().map(|m| method_info(m, core));
    let errors = errors.into_compile_errors();
    quote! {
        #the_trait
        #reference
        #mock
        impl #core::GrainInterface for #ref_ident {
            const TYPE_NAME: &'static str = #type_name;
            const METHODS: &'static [#core::MethodInfo] = &[#(#infos),*];
            type Ref = Self;
        }
        impl #core::ObserverInterface for #ref_ident {}
        #object
        #errors
    }
}

/// The trait an observer object implements: the methods as declared, each returning a `Send`
/// future.
fn trait_for_objects(item: &ItemTrait, methods: &[GrainMethod]) -> TokenStream {
    let (attrs, vis, ident) = (&item.attrs, &item.vis, &item.ident);
    let doc = format!(
        " An observer interface: implemented by an object a client serves (`{ident}Ref::object` \
         wraps it for `observe`). Grains call it through the reference `{ident}Ref`, tests \
         mock it with `{ident}Mock`."
    );
    let fns = methods.iter().map(|m| {
        let name = &m.name;
        let docs = &m.docs;
        let names = m.args.iter().map(|a| &a.name);
        let types = m.args.iter().map(|a| &a.ty);
        let result = &m.result;
        quote! {
            #(#docs)*
            fn #name(
                &self,
                #(#names: #types),*
            ) -> impl ::core::future::Future<Output = #result> + ::core::marker::Send;
        }
    });
    quote! {
        #(#attrs)*
        #[doc = ""]
        #[doc = #doc]
        #vis trait #ident: ::core::marker::Send + ::core::marker::Sync + 'static {
            #(#fns)*
        }
    }
}

/// `impl MatchWatcherRef { pub fn object<T: MatchWatcher>(object: T) -> ObserverObject<Self> }`.
fn object_fn(
    trait_ident: &Ident,
    ref_ident: &Ident,
    type_name: &str,
    methods: &[GrainMethod],
    paths: &Paths,
) -> TokenStream {
    let Paths {
        core, box_future, ..
    } = paths;
    let arms = methods.iter().map(|m| {
        let id = id_literal(m.id);
        let name = &m.name;
        let bindings: Vec<Ident> = (0..m.args.len()).map(|i| format_ident!("__arg{}", i)).collect();
        let types = m.args.iter().map(|a| &a.ty);
        let what = format!("{type_name}.{name} arguments");
        let take = quote_spanned!(m.params_span=> args.take(#what));
        let run = match &m.error {
            None => quote!(#trait_ident::#name(&*object, #(#bindings),*).await?),
            Some(error) => {
                let wrap = quote_spanned!(error.span()=> #core::CallError::domain_error(&target, &error));
                quote! {
                    match #trait_ident::#name(&*object, #(#bindings),*).await {
                        ::core::result::Result::Ok(value) => value,
                        ::core::result::Result::Err(error) => return ::core::result::Result::Err(#wrap),
                    }
                }
            }
        };
        quote! {
            #id => {
                let object = ::std::sync::Arc::clone(&object);
                let target = ::core::clone::Clone::clone(target);
                ::std::boxed::Box::pin(async move {
                    let _ = &target;
                    let encoded = args.is_encoded();
                    let (#(#bindings,)*): (#(#types,)*) = #take?;
                    let value = #run;
                    #core::Payload::reply_like(encoded, value)
                })
            }
        }
    });
    let doc = format!(
        " Wraps `object`, which implements [`{trait_ident}`], for a client to serve \
         (`client.observe(..)`): the reference the client hands out calls it."
    );
    quote! {
        impl #ref_ident {
            #[doc = #doc]
            #[must_use]
            pub fn object<T: #trait_ident>(object: T) -> #core::ObserverObject<Self> {
                let object = ::std::sync::Arc::new(object);
                #core::ObserverObject::from_dispatch(::std::sync::Arc::new(
                    move |target: &#core::GrainId, method: #core::MethodId, args: #core::Payload|
                        -> #box_future<'static, ::core::result::Result<#core::Payload, #core::CallError>> {
                        let _ = &args;
                        match method.0 {
                            #(#arms)*
                            _ => ::std::boxed::Box::pin(::core::future::ready(::core::result::Result::Err(
                                #core::CallError::UnknownMethod {
                                    grain_type: ::std::string::String::from(#type_name),
                                    method: method.0,
                                },
                            ))),
                        }
                    },
                ))
            }
        }
    }
}
