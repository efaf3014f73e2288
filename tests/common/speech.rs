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

/// Lower case, no punctuation, number words as digits ("ten" and "10" are the same word).
pub fn normalize(text: &str) -> Vec<String> {
    const NUMBERS: &[&str] = &[
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
        "twenty",
    ];
    text.to_lowercase()
        .chars()
        .map(|c| if c.is_alphanumeric() || c == '\'' { c } else { ' ' })
        .collect::<String>()
        .split_whitespace()
        .map(|w| NUMBERS.iter().position(|n| *n == w).map(|i| i.to_string()).unwrap_or_else(|| w.to_string()))
        .collect()
}

/// Word-level edit distance between reference and hypothesis (after normalisation), and the
/// reference's word count.
pub fn word_errors(reference: &str, hypothesis: &str) -> (usize, usize) {
    let (r, h) = (normalize(reference), normalize(hypothesis));
    let mut row: Vec<usize> = (0..=h.len()).collect();
    for (i, rw) in r.iter().enumerate() {
        let mut prev = row.clone();
        std::mem::swap(&mut prev, &mut row);
        row[0] = i + 1;
        for (j, hw) in h.iter().enumerate() {
            row[j + 1] = (prev[j + 1] + 1).min(row[j] + 1).min(prev[j] + usize::from(rw != hw));
        }
    }
    (row[h.len()], r.len())
}

pub fn wer(reference: &str, hypothesis: &str) -> f64 {
    let (e, n) = word_errors(reference, hypothesis);
    e as f64 / n.max(1) as f64
}
