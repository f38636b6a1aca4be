//! A one-way caller gets no reply, so a one-way method has no domain error either.
use granary::{CallError, GrainContext, grain};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub enum PingError {
    Call(CallError),
}

impl From<CallError> for PingError {
    fn from(err: CallError) -> Self {
        Self::Call(err)
    }
}

#[derive(Default)]
pub struct PlayerGrain;

#[grain(name = "player", state = ())]
impl PlayerGrain {
    #[one_way]
    pub async fn ping(&self, ctx: &GrainContext<Self>) -> Result<(), PingError> {
        let _ = ctx;
        Ok(())
    }
}

fn main() {}
