//! Speech test helpers: the fixture sentences and their texts, text normalisation and word
//! error rate.
#![allow(dead_code)]

use std::path::PathBuf;

pub fn audio(name: &str) -> PathBuf {
    super::root().join("tests/fixtures/audio").join(name)
}

/// `(wav, reference text)` of every fixture sentence.
pub fn sentences() -> Vec<(PathBuf, String)> {
    let tsv = std::fs::read_to_string(audio("sentences/transcripts.tsv")).unwrap();
    tsv.lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(f, t)| (audio(&format!("sentences/{f}")), t.to_string()))
        .collect()
}

/// `(start, end, text)` of each utterance in silence-speech-silence.wav.
pub fn timed_utterances() -> Vec<(f64, f64, String)> {
    let tsv = std::fs::read_to_string(audio("silence-speech-silence.tsv")).unwrap();
    tsv.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].parse().unwrap(), f[1].parse().unwrap(), f[2].to_string())
        })
        .collect()
}

#[allow(unused_imports)]
pub use edge_core::speech::wer::{wer, word_errors};
