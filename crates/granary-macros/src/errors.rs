//! [`Errors`]: the compile errors of one expansion, collected so that all are reported at once.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;

/// Compile errors collected while reading the attribute and the impl block.
///
/// Reading goes on after an error, and the expansion still emits what it could make sense of
/// (the grain impl without the faulty method, say): otherwise one mistake would be buried
/// under errors about the missing `Grain` impl.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    /// Records `error`.
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    /// Records an error with `message` at `span`.
    pub(crate) fn at(&mut self, span: Span, message: impl std::fmt::Display) {
        self.push(syn::Error::new(span, message));
    }

    /// Records an error with `message` spanning all of `tokens` (`at(node.span())` would point
    /// at the first token only, as spans cannot be joined on stable Rust).
    pub(crate) fn spanned(&mut self, tokens: impl ToTokens, message: impl std::fmt::Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    /// The errors as one combined `syn::Error`, if there were any.
    #[cfg(test)]
    pub(crate) fn into_syn(self) -> Option<syn::Error> {
        self.0
    }

    /// The errors as `compile_error!` invocations (empty if there were none).
    pub(crate) fn into_compile_errors(self) -> TokenStream {
        self.0.map(|e| e.to_compile_error()).unwrap_or_default()
    }
}
