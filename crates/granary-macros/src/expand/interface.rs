//! Grain interfaces: `#[grain_interface]` on a trait (the trait a grain implements, the typed
//! reference and the typed mock, all without an implementation), and what
//! `#[grain(implements = Trait)]` adds to a grain (its name and methods taken from the
//! interface, and the trait impl through which the compiler checks the grain's methods
//! against the interface's).

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Ident, Item, ItemTrait, TraitItem};

use super::{Interface, Paths, Surface, grain_impl, method_info, mock, reference};
use crate::args::{GrainArgs, InterfaceArgs};
use crate::errors::Errors;
use crate::parse::{GrainImpl, GrainMethod, Marker, check_ids, check_method, take_markers};

/// Expands `#[grain_interface(args)] trait Player { .. }` into the trait a grain implements
/// (each method with the context added), the typed reference `PlayerRef` (with `impl
/// GrainInterface`), the typed mock `PlayerMock` and the errors found.
pub(crate) fn grain_interface(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut item: Item = match syn::parse2(item) {
        Ok(item) => item,
        Err(e) => return e.to_compile_error(),
    };
    let Item::Trait(item) = &mut item else {
        let error = syn::Error::new(
            item.span(),
            "#[grain_interface] goes on a trait declaring a grain's methods: \
             `#[grain_interface(name = \"player\")] pub trait Player { .. }`",
        );
        let error = error.to_compile_error();
        return quote!(#item #error);
    };
    let mut errors = Errors::default();
    let args = InterfaceArgs::parse(args, Span::call_site(), &mut errors);
    let paths = Paths::new(&args.krate);
    let methods = read_trait(item, &mut errors);
    let the_trait = trait_for_grains(item, &methods, &paths);
    let ref_ident = format_ident!("{}Ref", item.ident, span = item.ident.span());
    let surface = Surface {
        type_name: args.name.value(),
        owner: &item.ident,
        methods: &methods,
    };
    let reference = reference::expand(&surface, &ref_ident, &paths);
    let mock = mock::expand(&surface, &mock::ident(&ref_ident), &ref_ident, &paths);
    let core = &paths.core;
    let name = &args.name;
    let infos = methods.iter().map(|m| method_info(m, core));
    let errors = errors.into_compile_errors();
    quote! {
        #the_trait
        #reference
        #mock
        impl #core::GrainInterface for #ref_ident {
            const TYPE_NAME: &'static str = #name;
            const METHODS: &'static [#core::MethodInfo] = &[#(#infos),*];
            type Ref = Self;
        }
        #errors
    }
}

/// Checks the trait and its methods; the methods that are sound, in source order.
pub(super) fn read_trait(item: &mut ItemTrait, errors: &mut Errors) -> Vec<GrainMethod> {
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        errors.spanned(
            &item.generics,
            "grain interfaces cannot be generic: a grain type has one stable name",
        );
    }
    if !item.supertraits.is_empty() {
        errors.spanned(
            &item.supertraits,
            "grain interfaces take no supertraits: the generated trait extends `Grain` itself",
        );
    }
    let mut methods = Vec::new();
    for trait_item in &mut item.items {
        let TraitItem::Fn(function) = trait_item else {
            errors.spanned(
                &*trait_item,
                "grain interfaces declare only grain methods: \
                 `async fn hp(&self) -> Result<u32>;`",
            );
            continue;
        };
        let markers = take_markers(&mut function.attrs, errors);
        let mut ok = true;
        for (marker, attr) in &markers {
            if marker.is_hook() {
                ok = false;
                errors.spanned(
                    attr,
                    format!(
                        "#[{}] hooks belong on the grain implementing the interface, not on the \
                         interface",
                        marker.name()
                    ),
                );
            }
        }
        if let Some(body) = &function.default {
            ok = false;
            errors.spanned(
                body,
                "grain interface methods have no body: the grain implementing the interface \
                 defines them",
            );
        }
        if function.sig.asyncness.is_none() {
            ok = false;
            errors.at(
                function.sig.fn_token.span,
                "grain interface methods are `async fn`s: `async fn hp(&self) -> Result<u32>;`",
            );
        }
        let one_way = markers.iter().any(|(m, _)| *m == Marker::OneWay);
        if let Some(mut method) = check_method(&function.sig, one_way, false, errors)
            && ok
        {
            method.read_only = markers.iter().any(|(m, _)| *m == Marker::ReadOnly);
            method.docs = function
                .attrs
                .iter()
                .filter(|a| a.path().is_ident("doc"))
                .cloned()
                .collect();
            methods.push(method);
        }
    }
    check_ids(&mut methods, errors);
    methods
}

/// The trait a grain implementing the interface implements (through
/// `#[grain(implements = ..)]`): the interface's methods with the grain context added, so the
/// compiler compares them with the grain's.
fn trait_for_grains(item: &ItemTrait, methods: &[GrainMethod], paths: &Paths) -> TokenStream {
    let core = &paths.core;
    let (attrs, vis, ident) = (&item.attrs, &item.vis, &item.ident);
    let doc = format!(
        " A grain interface: implemented by the grain type that declares `#[grain(implements = \
         {ident})]` on its impl block, with one `pub async fn` per method, each taking the grain \
         context after `&self`. Callers use the reference `{ident}Ref`, tests its mock \
         `{ident}Mock`."
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
                ctx: &#core::GrainContext<Self>,
                #(#names: #types),*
            ) -> impl ::core::future::Future<Output = #result> + ::core::marker::Send;
        }
    });
    quote! {
        #(#attrs)*
        #[doc = ""]
        #[doc = #doc]
        #vis trait #ident: #core::Grain {
            #(#fns)*
        }
    }
}

/// What `#[grain(implements = path::Player)]` generates for the grain: the `Grain` impl with
/// the interface's name and methods, its mock, and `impl path::Player`, which delegates to the
/// grain's methods so that a missing, extra or mismatched method is a compile error at the
/// grain's code.
pub(super) fn implementation(
    args: &GrainArgs,
    grain: &GrainImpl,
    trait_path: &syn::Path,
    paths: &Paths,
) -> TokenStream {
    let core = &paths.core;
    let self_ident = &grain.self_ident;
    let mut reference = trait_path.clone();
    if let Some(last) = reference.segments.last_mut() {
        last.ident = format_ident!("{}Ref", last.ident, span = last.ident.span());
        last.arguments = syn::PathArguments::None;
    }
    // The flags come from the interface; a grain method may repeat them (as it had them
    // before its grain moved to an interface), checked at compile time.
    let trait_name = quote!(#trait_path).to_string().replace(' ', "");
    let flag_checks = grain.methods.iter().filter_map(|m| {
        let (read_only, one_way) = (m.read_only, m.one_way);
        if !read_only && !one_way {
            return None;
        }
        let name = m.name.to_string();
        let flag = if read_only { "read_only" } else { "one_way" };
        let message = format!(
            "#[{flag}] on `{self_ident}::{name}` is not declared on the interface's method \
             `{trait_name}::{name}`: declare it there (the interface's flags are the ones callers \
             and the runtime use)"
        );
        Some(quote_spanned! {m.name.span()=>
            const _: () = ::core::assert!(
                #core::__private::declares_flags(
                    <#reference as #core::GrainInterface>::METHODS,
                    #name,
                    #read_only,
                    #one_way,
                ),
                #message,
            );
        })
    });
    let flag_checks: Vec<TokenStream> = flag_checks.collect();
    let grain_impl = grain_impl(args, grain, &Interface::Implements(&reference), paths);
    let fns = grain.methods.iter().map(|m| {
        let name = &m.name;
        let names: Vec<&Ident> = m.args.iter().map(|a| &a.name).collect();
        let types = m.args.iter().map(|a| &a.ty);
        let result = &m.result;
        let output = quote_spanned!(result.span()=>
            impl ::core::future::Future<Output = #result> + ::core::marker::Send
        );
        // Spanned at the grain's method: "not a member of trait" points at it.
        quote_spanned! {name.span()=>
            fn #name(
                &self,
                ctx: &#core::GrainContext<Self>,
                #(#names: #types),*
            ) -> #output {
                Self::#name(self, ctx, #(#names),*)
            }
        }
    });
    // Spanned at `implements = ..`: "not all trait items implemented" points at it.
    let impl_trait = quote_spanned! {trait_path.span()=>
        impl #trait_path for #self_ident {
            #(#fns)*
        }
    };
    quote! {
        #grain_impl
        #(#flag_checks)*

        impl #core::GrainMock for #self_ident {
            type Mock = <#reference as #core::GrainMock>::Mock;
        }

        #impl_trait
    }
}
