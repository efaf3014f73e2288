//! edge-agent: runs pretrained int8 models on frames and audio from devices and publishes
//! the results over MQTT. See ARCHITECTURE.md for the map of modules.

pub mod allocator;
pub mod app;
#[cfg(feature = "bench")]
pub mod bench;
pub mod cli;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod event;
pub mod health;
pub mod homeassistant;
pub mod link;
pub mod logging;
pub mod metrics;
pub mod mqtt;
pub mod objects;
pub mod outbox;
pub mod pipeline;
pub mod publisher;
pub mod sink;
pub mod stats;
pub mod update;
pub mod view;
pub mod web;

pub mod commands;
#[cfg(test)]
mod robustness_tests;
pub mod sched;
pub mod sdnotify;
