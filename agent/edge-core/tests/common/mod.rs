//! What edge-core's tests share: the repository-wide test support.
#![allow(dead_code)]

#[path = "../../../../tests/support.rs"]
mod support;
#[allow(unused_imports)]
pub use support::{fixture, fp32_references, models, root};
