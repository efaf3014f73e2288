//! edge-agent: runs pretrained int8 models on frames and audio from devices and publishes
//! the results over MQTT. See ARCHITECTURE.md for the map of modules.

pub mod allocator;
pub mod app;
pub mod audio;
pub mod bench;
pub mod broker;
pub mod config;
pub mod demo;
pub mod head;
pub mod health;
pub mod link;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod mqtt;
pub mod outbox;
pub mod pipeline;
pub mod publisher;
pub mod source;
pub mod speech;
pub mod stats;
pub mod update;
pub mod vision;

pub mod commands;
#[cfg(test)]
mod robustness_tests;
pub mod sched;
pub mod sdnotify;
