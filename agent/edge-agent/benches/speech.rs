//! Speech in tract, int8 and fp32 side by side in one run, on the fixture sentences:
//! load time and resident memory added by each model, encoder and decoder time, real-time
//! factor, word error rate; and what the VAD costs per second of audio.
//! `cargo bench --bench speech` (the fp32 files come from `scripts/make-models.sh speech`);
//! `cargo bench --bench speech -- int8` (or `fp32`) runs one precision alone, so that the
//! memory figures are that model's only.

use std::path::Path;
use std::time::{Duration, Instant};

use edge_agent::config::Precision;
use edge_core::model::Catalog;
use edge_core::speech::vad::{CHUNK, SileroVad};
use edge_core::speech::wer::word_errors;
use edge_core::speech::whisper::Whisper;

/// (resident, peak) memory of this process in MB.
fn memory_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(f64::NAN)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let catalog = Catalog::open(&root.join("models")).expect("models folder");
    let entry = catalog.get_speech("whisper-tiny-en").expect("whisper-tiny-en");
    let dir = root.join("tests/fixtures/audio/sentences");
    let tsv = std::fs::read_to_string(dir.join("transcripts.tsv")).expect("transcripts.tsv");
    let sentences: Vec<(Vec<f32>, String)> = tsv
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(f, t)| (edge_core::audio::wav::read_16k(&dir.join(f)).expect("fixture wav"), t.to_string()))
        .collect();
    let audio_secs: f64 = sentences.iter().map(|(s, _)| s.len() as f64 / 16_000.0).sum();
    println!("whisper tiny.en in tract, {} sentences, {audio_secs:.1} s of audio, 1 thread per run", sentences.len());
    println!(
        "{:>9} {:>9} {:>9} {:>12} {:>12} {:>11} {:>8} {:>7}",
        "precision", "load ms", "+RSS MB", "encoder ms", "decoder ms", "ms/token", "RTF", "WER"
    );
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let precisions = [Precision::Int8, Precision::Fp32];
    for precision in precisions.into_iter().filter(|p| only.is_empty() || only.iter().any(|o| o == p.as_str())) {
        let before = memory_mb().0;
        let started = Instant::now();
        let whisper = match Whisper::load(entry, precision.clone()) {
            Ok(w) => w,
            Err(e) => {
                println!("{precision:>9} not available: {e}");
                continue;
            }
        };
        let load = started.elapsed();
        let added = memory_mb().0 - before;
        // warm-up, then every sentence once
        whisper.transcribe(&sentences[0].0).expect("warm-up");
        let (mut enc, mut dec, mut per_token) = (Vec::new(), Vec::new(), Vec::new());
        let (mut errors, mut words, mut busy) = (0, 0, Duration::ZERO);
        for (samples, reference) in &sentences {
            let t = whisper.transcribe(samples).expect("transcribe");
            enc.push(t.encode.as_secs_f64() * 1000.0);
            dec.push(t.decode.as_secs_f64() * 1000.0);
            per_token.push(t.decode.as_secs_f64() * 1000.0 / (t.tokens.len() + 2) as f64);
            busy += t.processing();
            let (e, n) = word_errors(reference, &t.text);
            errors += e;
            words += n;
        }
        println!(
            "{:>9} {:>9.0} {:>9.0} {:>12.0} {:>12.0} {:>11.1} {:>8.3} {:>7.3}",
            precision.as_str(),
            load.as_secs_f64() * 1000.0,
            added,
            median(enc),
            median(dec),
            median(per_token),
            busy.as_secs_f64() / audio_secs,
            errors as f64 / words as f64
        );
    }
    let vad_entry = catalog.get_speech("silero-vad").expect("silero-vad");
    let mut vad = SileroVad::load(vad_entry).expect("vad");
    let started = Instant::now();
    let mut chunks = 0;
    for (samples, _) in &sentences {
        for chunk in samples.chunks_exact(CHUNK) {
            vad.probability(chunk).expect("vad");
            chunks += 1;
        }
    }
    let per_chunk = started.elapsed().as_secs_f64() / chunks as f64;
    println!(
        "silero vad: {:.3} ms per 32 ms chunk = {:.2} % of one core in real time",
        per_chunk * 1000.0,
        per_chunk / 0.032 * 100.0
    );
    let (rss, peak) = memory_mb();
    println!("process: {rss:.0} MB resident, {peak:.0} MB peak");
}
