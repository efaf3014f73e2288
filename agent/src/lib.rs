//! edge-agent: runs pretrained int8 models on frames and audio from devices and publishes
//! the results over MQTT. See ARCHITECTURE.md for the map of modules.

pub mod config;
pub mod model;
pub mod vision;
pub mod logging;
pub mod source;
pub mod link;
pub mod mqtt;
pub mod stats;
pub mod pipeline;
pub mod app;
pub mod broker;
pub mod demo;
