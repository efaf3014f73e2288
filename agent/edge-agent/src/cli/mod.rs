//! The bodies of the commands that use the models directly: `detect` (`detect.rs`),
//! `classify` and `head` (`head.rs`), `transcribe` (`speech.rs`).

pub mod detect;
pub mod head;
pub mod speech;
