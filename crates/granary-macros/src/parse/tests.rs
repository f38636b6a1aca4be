//! Reading impl blocks and attribute arguments, on syntax trees only.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote};
use syn::ItemImpl;

use super::{GrainImpl, method_id};
use crate::args::GrainArgs;
use crate::errors::Errors;

/// Parses `item`; returns the model, the rewritten item and the error messages.
fn parse(item: TokenStream) -> (Option<GrainImpl>, ItemImpl, Vec<String>) {
    let mut item: ItemImpl = syn::parse2(item).expect("test input is an impl block");
    let mut errors = Errors::default();
    let grain = GrainImpl::parse(&mut item, &mut errors);
    (grain, item, messages(errors))
}

fn messages(errors: Errors) -> Vec<String> {
    errors
        .into_syn()
        .map(|e| e.into_iter().map(|e| e.to_string()).collect())
        .unwrap_or_default()
}

/// The error messages for one impl block, which must be non-empty.
fn errors_of(item: TokenStream) -> Vec<String> {
    let (_, _, errors) = parse(item);
    assert!(!errors.is_empty(), "expected errors");
    errors
}

fn assert_one_error(item: TokenStream, expected: &str) {
    let errors = errors_of(item);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].contains(expected),
        "{:?} does not contain {expected:?}",
        errors[0]
    );
}

#[test]
fn method_ids_are_fnv1a_of_the_name() {
    assert_eq!(method_id(""), 0x811c_9dc5);
    assert_eq!(method_id("a"), 0xe40c_292c);
    assert_eq!(method_id("take_damage"), 0xd902_76aa);
}

#[test]
fn pub_async_fns_taking_self_are_methods_and_the_rest_is_left_alone() {
    let (grain, item, errors) = parse(quote! {
        impl PlayerGrain {
            /// Docs.
            pub async fn take_damage(&self, ctx: &GrainContext<Self>, amount: i32, mut source: String) -> Result<bool> { panic!() }
            #[read_only]
            pub async fn health(&self, c: &'a granary::GrainContext<Self>) -> granary::Result<i32, CallError> { panic!() }
            #[one_way]
            pub async fn ping(&self, _: &GrainContext<Self>, _n: u32, (a, b): (u8, u8)) -> std::result::Result<(), CallError> { panic!() }
            async fn private(&self, ctx: &GrainContext<Self>) -> Result<()> { panic!() }
            pub fn sync(&self) -> u32 { 1 }
            pub async fn constructor() -> Self { panic!() }
            pub(crate) async fn crate_only(&self) {}
        }
    });
    assert_eq!(errors, Vec::<String>::new());
    let grain = grain.expect("a grain");
    assert_eq!(grain.self_ident, "PlayerGrain");

    let summary: Vec<_> = grain
        .methods
        .iter()
        .map(|m| {
            let args: Vec<_> = m
                .args
                .iter()
                .map(|a| format!("{}: {}", a.name, a.ty.to_token_stream()))
                .collect();
            (
                m.name.to_string(),
                args,
                m.output.to_token_stream().to_string(),
                m.read_only,
                m.one_way,
            )
        })
        .collect();
    let expected = [
        (
            "take_damage",
            vec!["amount: i32", "source: String"],
            "bool",
            false,
            false,
        ),
        ("health", vec![], "i32", true, false),
        (
            "ping",
            vec!["arg0: u32", "arg1: (u8 , u8)"],
            "()",
            false,
            true,
        ),
    ];
    let expected: Vec<_> = expected
        .into_iter()
        .map(|(n, a, o, r, w)| {
            (
                n.to_owned(),
                a.into_iter().map(str::to_owned).collect::<Vec<_>>(),
                o.to_owned(),
                r,
                w,
            )
        })
        .collect();
    assert_eq!(summary, expected);
    assert_eq!(grain.methods[0].id, method_id("take_damage"));
    assert_eq!(grain.methods[0].docs.len(), 1);
    assert!(grain.methods[1].docs.is_empty());
    assert!(
        grain.on_activate.is_none() && grain.on_deactivate.is_none() && grain.on_timer.is_none()
    );

    // Helper attributes are gone; grain methods are exempt from `unreachable_pub`.
    let rewritten = item.to_token_stream().to_string();
    assert!(
        !rewritten.contains("read_only") && !rewritten.contains("one_way"),
        "{rewritten}"
    );
    assert_eq!(
        rewritten.matches("allow (unreachable_pub").count(),
        3,
        "{rewritten}"
    );
}

#[test]
fn hooks_are_found_and_stripped() {
    let (grain, item, errors) = parse(quote! {
        impl Lobby {
            #[on_activate]
            async fn up(&self, ctx: &GrainContext<Self>) -> Result<()> { panic!() }
            #[on_deactivate]
            pub async fn down(&self, ctx: &GrainContext<Self>) -> Result<()> { panic!() }
            #[on_timer]
            async fn tick(&self, ctx: &GrainContext<Self>, name: &str) -> Result<()> { panic!() }
        }
    });
    assert_eq!(errors, Vec::<String>::new());
    let grain = grain.expect("a grain");
    assert!(grain.methods.is_empty(), "a pub hook is not a grain method");
    assert_eq!(grain.on_activate.expect("on_activate").name, "up");
    assert_eq!(grain.on_deactivate.expect("on_deactivate").name, "down");
    assert_eq!(grain.on_timer.expect("on_timer").name, "tick");
    assert!(!item.to_token_stream().to_string().contains("on_"));
}

#[test]
fn method_signature_errors() {
    let cases: [(TokenStream, &str); 12] = [
        (
            quote!(pub async fn f(&mut self, ctx: &GrainContext<Self>) -> Result<()>),
            "not `&mut self`",
        ),
        (
            quote!(pub async fn f(self, ctx: &GrainContext<Self>) -> Result<()>),
            "take `&self`",
        ),
        (
            quote!(pub async fn f(&self) -> Result<()>),
            "must be the grain context",
        ),
        (
            quote!(pub async fn f(&self, n: u32) -> Result<()>),
            "must be the grain context",
        ),
        (
            quote!(pub async fn f(&self, ctx: &mut GrainContext<Self>) -> Result<()>),
            "must be the grain context",
        ),
        (
            quote!(pub async fn f(&self, ctx: &GrainContext<Self>, s: &str) -> Result<()>),
            "must be owned",
        ),
        (
            quote!(pub async fn f(&self, ctx: &GrainContext<Self>, s: Vec<&'static str>) -> Result<()>),
            "must be owned",
        ),
        (
            quote!(pub async fn f(&self, ctx: &GrainContext<Self>, s: impl Into<String>) -> Result<()>),
            "must be owned",
        ),
        (
            quote!(pub async fn f(&self, ctx: &GrainContext<Self>, s: Cow<'a, str>) -> Result<()>),
            "must be owned",
        ),
        (
            quote!(pub async fn f(&self, ctx: &GrainContext<Self>) -> Result<Vec<Self>>),
            "`Self` would name",
        ),
        (
            quote!(pub async fn f<T>(&self, ctx: &GrainContext<Self>, t: T) -> Result<()>),
            "cannot be generic",
        ),
        (
            quote!(pub async fn f(&self, ctx: &GrainContext<Self>) -> Option<u32>),
            "return `Result<T>`",
        ),
    ];
    for (method, expected) in cases {
        assert_one_error(quote!(impl G { #method {} }), expected);
    }
    assert_one_error(
        quote!(impl G { #[one_way] pub async fn f(&self, ctx: &GrainContext<Self>) -> Result<u8> {} }),
        "#[one_way] methods return `Result<()>`",
    );
    assert_one_error(
        quote!(impl G { pub async fn id(&self, ctx: &GrainContext<Self>) -> Result<u8> {} }),
        "method of the generated reference",
    );
}

#[test]
fn hook_and_marker_errors() {
    let cases: [(TokenStream, &str); 8] = [
        (
            quote!(
                #[on_activate]
                fn up(&self, ctx: &GrainContext<Self>) -> Result<()> {}
            ),
            "hooks have the signature",
        ),
        (
            quote!(
                #[on_timer]
                async fn t(&self, ctx: &GrainContext<Self>) -> Result<()> {}
            ),
            "name: &str",
        ),
        (
            quote!(
                #[on_deactivate]
                async fn d(&self, ctx: &GrainContext<Self>, x: u8) -> Result<()> {}
            ),
            "signature",
        ),
        (
            quote!(
                #[on_activate]
                async fn up(&self, ctx: &GrainContext<Self>) {}
            ),
            "signature",
        ),
        (
            quote!(
                #[on_activate]
                #[on_deactivate]
                async fn x(&self, ctx: &GrainContext<Self>) -> Result<()> {}
            ),
            "only one hook",
        ),
        (
            quote!(
                #[read_only]
                async fn private(&self, ctx: &GrainContext<Self>) -> Result<()> {}
            ),
            "marks grain methods",
        ),
        (
            quote!(
                #[read_only(yes)]
                pub async fn f(&self, ctx: &GrainContext<Self>) -> Result<()> {}
            ),
            "takes no arguments",
        ),
        (
            quote!(
                #[one_way]
                #[one_way]
                pub async fn f(&self, ctx: &GrainContext<Self>) -> Result<()> {}
            ),
            "given twice",
        ),
    ];
    for (function, expected) in cases {
        assert_one_error(quote!(impl G { #function }), expected);
    }
    assert_one_error(
        quote! {
            impl G {
                #[on_timer] async fn a(&self, ctx: &GrainContext<Self>, name: &str) -> Result<()> {}
                #[on_timer] async fn b(&self, ctx: &GrainContext<Self>, name: &str) -> Result<()> {}
            }
        },
        "duplicate #[on_timer]: `a` is already",
    );
}

#[test]
fn faulty_methods_are_left_out_and_the_rest_kept() {
    let (grain, _, errors) = parse(quote! {
        impl G {
            pub async fn good(&self, ctx: &GrainContext<Self>) -> Result<()> {}
            pub async fn bad(&self, ctx: &GrainContext<Self>, s: &str) -> Result<()> {}
            pub async fn worse(&mut self) -> u8 {}
        }
    });
    assert_eq!(errors.len(), 4, "every fault is reported: {errors:#?}");
    let names: Vec<_> = grain
        .expect("a grain")
        .methods
        .iter()
        .map(|m| m.name.to_string())
        .collect();
    assert_eq!(names, ["good"]);
}

#[test]
fn colliding_method_ids_are_refused() {
    // Found by brute force: two names with the same 32-bit FNV-1a hash.
    assert_eq!(method_id("m_zzrcwlpl"), method_id("m_hxgllyfn"));
    let errors = errors_of(quote! {
        impl G {
            pub async fn m_zzrcwlpl(&self, ctx: &GrainContext<Self>) -> Result<()> {}
            pub async fn m_hxgllyfn(&self, ctx: &GrainContext<Self>) -> Result<()> {}
        }
    });
    assert_eq!(
        errors,
        [
            "the method ids of `m_zzrcwlpl` and `m_hxgllyfn` collide (FNV-1a 0x6c1a22b5); rename one of them"
        ]
    );
}

#[test]
fn impl_blocks_that_cannot_be_grains() {
    for (item, expected) in [
        (quote!(impl Trait for G {}), "not on a trait impl"),
        (
            quote!(
                impl<T> G<T> {}
            ),
            "cannot be generic",
        ),
        (
            quote!(
                impl <G as Trait>::Assoc {}
            ),
            "plain struct name",
        ),
    ] {
        let (grain, _, errors) = parse(item);
        assert!(grain.is_none());
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "{errors:?} lacks {expected:?}"
        );
    }
}

fn parse_args(tokens: TokenStream) -> (GrainArgs, Vec<String>) {
    let mut errors = Errors::default();
    let args = GrainArgs::parse(tokens, Span::call_site(), &mut errors);
    (args, messages(errors))
}

#[test]
fn attribute_arguments() {
    let (args, errors) = parse_args(quote!(name = "player", state = PlayerState));
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(args.name.value(), "player");
    assert_eq!(args.state.to_token_stream().to_string(), "PlayerState");
    assert!(!args.reentrant);
    assert!(args.reference.is_none());
    assert_eq!(args.krate.to_token_stream().to_string(), ":: granary");

    let (args, errors) = parse_args(quote!(
        reentrant,
        state = (),
        crate = "crate::shim",
        reference = Handle,
        name = "lobby"
    ));
    assert!(errors.is_empty(), "{errors:?}");
    assert!(args.reentrant);
    assert_eq!(args.reference.expect("reference"), "Handle");
    assert_eq!(args.krate.to_token_stream().to_string(), "crate :: shim");
}

#[test]
fn attribute_argument_errors() {
    let cases: [(TokenStream, &[&str]); 7] = [
        (quote!(state = ()), &["missing `name"]),
        (quote!(name = "p"), &["missing `state"]),
        (quote!(), &["missing `name", "missing `state"]),
        (
            quote!(name = "p", state = (), name = "q"),
            &["duplicate grain argument `name`"],
        ),
        (
            quote!(name = player, state = ()),
            &["takes a string literal"],
        ),
        (quote!(name = "", state = ()), &["must not be empty"]),
        (
            quote!(reentrant = true, name = "p", state = ()),
            &["takes no value"],
        ),
    ];
    for (tokens, expected) in cases {
        let (_, errors) = parse_args(tokens);
        assert_eq!(errors.len(), expected.len(), "{errors:?}");
        for (error, expected) in errors.iter().zip(expected) {
            assert!(error.contains(expected), "{error:?} lacks {expected:?}");
        }
    }

    // Unknown arguments are reported, and the others still read.
    let (args, errors) = parse_args(quote!(persist = "x", name = "p", storage(a, b), state = u8));
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].starts_with("unknown grain argument `persist`"),
        "{errors:?}"
    );
    assert!(
        errors[1].starts_with("unknown grain argument `storage`"),
        "{errors:?}"
    );
    assert_eq!(args.name.value(), "p");
}
