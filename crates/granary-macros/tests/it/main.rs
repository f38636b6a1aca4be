//! Tests of `#[grain]`'s public behaviour: what the generated dispatch and reference do
//! (`dispatch`), and which code compiles and with which errors (`ui`).

mod dispatch;
mod ui;
