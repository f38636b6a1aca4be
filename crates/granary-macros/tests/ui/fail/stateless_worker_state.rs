//! A stateless worker has no state, and at least one activation per key.
use granary::{GrainContext, Result, grain};
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
pub struct Catalogue {
    items: Vec<String>,
}

#[derive(Default)]
pub struct LookupGrain;

#[grain(name = "lookup", state = Catalogue, stateless_worker)]
impl LookupGrain {
    pub async fn find(&self, ctx: &GrainContext<Self>, item: String) -> Result<bool> {
        let _ = (ctx, item);
        Ok(false)
    }
}

#[derive(Default)]
pub struct TokenGrain;

#[grain(name = "token", stateless_worker = 0)]
impl TokenGrain {
    pub async fn check(&self, ctx: &GrainContext<Self>, token: String) -> Result<bool> {
        let _ = (ctx, token);
        Ok(true)
    }
}

#[derive(Default)]
pub struct MatchmakerGrain;

#[grain(name = "matchmaker", stateless_worker = 4, state_version = 2)]
impl MatchmakerGrain {
    pub async fn queue(&self, ctx: &GrainContext<Self>) -> Result<u32> {
        let _ = ctx;
        Ok(0)
    }
}

fn main() {}
