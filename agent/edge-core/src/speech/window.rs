//! Whisper's encoder sized to the utterance: its graphs rewritten for a shorter window, and
//! which window an utterance gets.
//!
//! The encoder is written for 30 s (3000 mel frames, 1500 positions). Nothing in it depends on
//! the length but its input, its declared outputs and the positional encodings added after the
//! convolutions, so an encoder for `f` frames is the same file with the mel input declared
//! `[1, 80, f]`, the encodings cut to their first `f / 2` rows and the cross-attention outputs
//! declared with `f / 2` positions (as whisper.cpp's `audio_ctx` does). The decoder step takes
//! the cross-attention keys and values with their length left symbolic, so one decoder plan
//! serves every window. The mel frames are those of the 30 s frontend, cut: its log-mel
//! normalisation (the clamp 8 below the window's maximum) is the same as before.
//!
//! Stock tiny.en is known to repeat itself or invent text on a window shrunk far below what it
//! was trained on; the windows here keep at least [`MARGIN_SAMPLES`] after the speech, and the
//! caller redoes an utterance on the full window when a short one did not end cleanly.

use tract_onnx::pb::tensor_shape_proto::dimension::Value as Dim;
use tract_onnx::pb::type_proto::Value as Type;
use tract_onnx::pb::{ModelProto, ValueInfoProto};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{TractErrorContext, ensure};

use super::SAMPLE_RATE;

/// Mel frames of the full window (30 s at 100 frames a second).
pub const FULL_FRAMES: usize = 3000;
/// Audio samples per mel frame.
const HOP: usize = 160;
/// The windows an utterance can get, in mel frames (5, 10, 20 and 30 s): few, so that each
/// has one plan, loaded on first use.
pub const WINDOWS: [usize; 4] = [500, 1000, 2000, FULL_FRAMES];
/// Audio past the end of the speech a shortened window keeps: the model saw at least this
/// much of the zero padding after speech in training, and ends the text on it.
pub const MARGIN_SAMPLES: usize = SAMPLE_RATE as usize;
/// The symbol the decoder step's cross-attention length is declared with.
pub const CROSS_LEN: &str = "CROSS_LEN";

/// The smallest window (in mel frames) that holds `samples` of speech and the margin.
pub fn frames_for(samples: usize) -> usize {
    let need = (samples + MARGIN_SAMPLES).div_ceil(HOP);
    WINDOWS.iter().copied().find(|&w| w >= need).unwrap_or(FULL_FRAMES)
}

/// The encoder `proto` (written for [`FULL_FRAMES`]) rewritten for `frames` mel frames, its
/// attention computed one head at a time ([`super::attention`]).
pub fn encoder_for(mut proto: ModelProto, frames: usize) -> TractResult<ModelProto> {
    ensure!(frames > 0 && frames.is_multiple_of(2) && frames <= FULL_FRAMES, "an encoder window of {frames} frames");
    let positions = frames / 2;
    let graph = proto.graph.as_mut().context("the encoder has no graph")?;
    // the positional encodings: the one float initializer of [FULL_FRAMES / 2, d]
    let mut cut = 0;
    for t in graph.initializer.iter_mut().filter(|t| t.dims.len() == 2 && t.dims[0] == (FULL_FRAMES / 2) as i64) {
        let d = usize::try_from(t.dims[1])?;
        ensure!(t.data_type == 1, "positional encodings {:?} are not f32", t.name);
        if !t.raw_data.is_empty() {
            ensure!(t.raw_data.len() == FULL_FRAMES / 2 * d * 4, "positional encodings {:?} of a wrong size", t.name);
            t.raw_data.truncate(positions * d * 4);
        } else {
            ensure!(t.float_data.len() == FULL_FRAMES / 2 * d, "positional encodings {:?} of a wrong size", t.name);
            t.float_data.truncate(positions * d);
        }
        t.dims[0] = positions as i64;
        cut += 1;
    }
    ensure!(cut == 1, "the encoder has {cut} tables of {} positions, expected one", FULL_FRAMES / 2);
    for input in &mut graph.input {
        resize(input, FULL_FRAMES, Dim::DimValue(frames as i64));
    }
    for output in &mut graph.output {
        resize(output, FULL_FRAMES / 2, Dim::DimValue(positions as i64));
    }
    super::attention::by_head(graph);
    Ok(proto)
}

/// The decoder step `proto` with its cross-attention inputs' length declared [`CROSS_LEN`].
pub fn decoder_for_any_window(mut proto: ModelProto) -> TractResult<ModelProto> {
    let graph = proto.graph.as_mut().context("the decoder has no graph")?;
    let mut changed = 0;
    for input in graph.input.iter_mut().filter(|i| i.name.starts_with("cross_")) {
        changed += resize(input, FULL_FRAMES / 2, Dim::DimParam(CROSS_LEN.into()));
    }
    ensure!(changed > 0, "the decoder declares no cross-attention input of {} positions", FULL_FRAMES / 2);
    Ok(proto)
}

/// Replaces each dimension of `value`'s declared shape equal to `from` by `to`; how many.
fn resize(value: &mut ValueInfoProto, from: usize, to: Dim) -> usize {
    let Some(Type::TensorType(t)) = value.r#type.as_mut().and_then(|t| t.value.as_mut()) else { return 0 };
    let Some(shape) = t.shape.as_mut() else { return 0 };
    let mut n = 0;
    for d in &mut shape.dim {
        if d.value == Some(Dim::DimValue(from as i64)) {
            d.value = Some(to.clone());
            n += 1;
        }
    }
    n
}

/// The first `frames` frames of a `[1, mels, FULL_FRAMES]` log-mel tensor.
pub fn cut_mel(mel: &Tensor, frames: usize) -> TractResult<Tensor> {
    ensure!(mel.rank() == 3 && mel.shape()[2] >= frames, "a log-mel of shape {:?}", mel.shape());
    if mel.shape()[2] == frames {
        return Ok(mel.clone());
    }
    mel.slice(2, 0, frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_utterance_gets_the_smallest_window_with_its_margin() {
        let s = SAMPLE_RATE as usize;
        assert_eq!(frames_for(3 * s), 500);
        assert_eq!(frames_for(4 * s), 500);
        assert_eq!(frames_for(4 * s + 1), 1000);
        assert_eq!(frames_for(12 * s), 2000);
        assert_eq!(frames_for(19 * s + 1), FULL_FRAMES);
        assert_eq!(frames_for(40 * s), FULL_FRAMES);
        assert_eq!(frames_for(0), 500);
    }
}
