//! The processing stage of a pipeline, built from its config, and what it yields per frame.

use std::time::Duration;

use crate::config::StageConfig;
use crate::model::{Catalog, ModelPool};
use crate::mqtt::payload::DetectionsMessage;
use crate::source::Frame;
use crate::vision::detector::{DetectError, DetectOutput, Detector};

pub enum Stage {
    Detect(Detector),
}

/// One frame's result.
pub enum StageOutput {
    Detections(DetectOutput),
}

impl StageOutput {
    pub fn inference(&self) -> Duration {
        match self {
            StageOutput::Detections(d) => d.inference,
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            StageOutput::Detections(d) => d.detections.is_empty(),
        }
    }

    /// The MQTT payload for this result.
    pub fn to_json(&self, device: &str, pipeline: &str, seq: u64, frame: &Frame) -> Vec<u8> {
        match self {
            StageOutput::Detections(d) => {
                let msg = DetectionsMessage::new(device, pipeline, seq, frame, d);
                serde_json::to_vec(&msg).unwrap_or_default()
            }
        }
    }
}

impl Stage {
    /// Builds the stage chain; this version runs exactly one stage per pipeline.
    pub fn build(stages: &[StageConfig], catalog: &Catalog, pool: &mut ModelPool) -> Result<Stage, String> {
        let [only] = stages else {
            return Err(format!("exactly one stage per pipeline is supported, got {}", stages.len()));
        };
        match only {
            StageConfig::Detect(d) => {
                let entry = catalog.get(&d.model).ok_or_else(|| format!("no model named {:?}", d.model))?;
                let model = pool.get_or_load(entry, &d.precision).map_err(|e| e.to_string())?;
                Ok(Stage::Detect(Detector::new(model, d.clone())))
            }
            StageConfig::Vad(_) | StageConfig::Transcribe(_) => Err("audio stages need an audio source".into()),
        }
    }

    pub fn process(&self, frame: &Frame) -> Result<StageOutput, DetectError> {
        match self {
            Stage::Detect(d) => Ok(StageOutput::Detections(d.detect(&frame.image)?)),
        }
    }
}
