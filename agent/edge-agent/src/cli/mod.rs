//! The bodies of the commands that use the models directly: `classify` and `head`
//! (`head.rs`), `transcribe` (`speech.rs`).

pub mod head;
pub mod speech;
