//! Checks of vision stage chains (`[detect]`, `[classify]`, `[detect, classify]`) and of the
//! `[updates]` section, each problem with its path.

use super::validate::issue;
use super::{ClassifyStage, Issue, StageConfig, UpdateSettings};
use edge_core::model::{Catalog, Task};

/// The chains a frame source may feed, by stage type.
pub(super) fn check_chain(path: &str, stages: &[StageConfig], issues: &mut Vec<Issue>) {
    let kinds: Vec<&str> = stages
        .iter()
        .map(|s| match s {
            StageConfig::Detect(_) => "detect",
            StageConfig::Classify(_) => "classify",
            StageConfig::Vad(_) => "vad",
            StageConfig::Transcribe(_) => "transcribe",
        })
        .collect();
    let ok = matches!(kinds.as_slice(), ["detect"] | ["classify"] | ["detect", "classify"])
        || kinds.iter().any(|k| matches!(*k, "vad" | "transcribe"));
    if !ok {
        issues.push(issue(
            format!("{path}.stages"),
            format!("a frame pipeline runs [detect], [classify] or [detect, classify], not {kinds:?}"),
        ));
    }
}

pub(super) fn check_classify(
    at: &str,
    pipeline: &str,
    c: &ClassifyStage,
    upstream_labels: Option<&[String]>,
    catalog: &Catalog,
    issues: &mut Vec<Issue>,
) {
    match catalog.get(&c.model) {
        None => issues.push(issue(
            format!("{at}.model"),
            format!("no model named {:?} (available: {})", c.model, catalog.names().join(", ")),
        )),
        Some(m) if m.manifest.task != Task::Embedding => {
            issues.push(issue(format!("{at}.model"), format!("{:?} is not an embedding backbone", c.model)))
        }
        Some(m) => {
            if !m.manifest.variants.contains_key(&c.precision) {
                issues.push(issue(
                    format!("{at}.precision"),
                    format!("model {:?} has no {} variant", c.model, c.precision),
                ));
            }
            if !m.manifest.heads.contains_key(&c.head) {
                let known: Vec<&String> = m.manifest.heads.keys().collect();
                issues.push(issue(
                    format!("{at}.head"),
                    format!("model {:?} ships no head {:?} (it has {known:?})", c.model, c.head),
                ));
            }
        }
    }
    if !edge_core::head::valid_name(&c.slot_name(pipeline)) {
        issues.push(issue(format!("{at}.slot"), "use 1 to 64 of letters, digits, '.', '_', '-'"));
    }
    if !(1..=100).contains(&c.top_k) {
        issues.push(issue(format!("{at}.top_k"), "must be in [1, 100]"));
    }
    match upstream_labels {
        None if !c.on.is_empty() => {
            issues.push(issue(format!("{at}.on"), "only applies after a detect stage"));
        }
        Some(labels) => {
            for class in c.on.iter().filter(|c| !labels.contains(c)) {
                issues.push(issue(format!("{at}.on"), format!("the detector has no label {class:?}")));
            }
        }
        None => {}
    }
}

pub(super) fn check_updates(u: &UpdateSettings, issues: &mut Vec<Issue>) {
    for (i, key) in u.trusted_keys.iter().enumerate() {
        if let Err(e) = crate::update::sign::public_key(key) {
            issues.push(issue(format!("updates.trusted_keys[{i}]"), e.to_string()));
        }
    }
    if u.max_bytes < 1024 || u.max_bytes > 1 << 30 {
        issues.push(issue("updates.max_bytes", "must be in [1 KiB, 1 GiB]"));
    }
    if !(u.transfer_timeout_secs > 0.0 && u.transfer_timeout_secs <= 3600.0) {
        issues.push(issue("updates.transfer_timeout_secs", "must be in (0, 3600]"));
    }
    if !(u.max_age_secs >= 60.0 && u.max_age_secs <= 365.0 * 86_400.0) {
        issues.push(issue("updates.max_age_secs", "must be from 60 s to a year"));
    }
    if !(u.max_clock_skew_secs >= 0.0 && u.max_clock_skew_secs <= 86_400.0) {
        issues.push(issue("updates.max_clock_skew_secs", "must be from 0 to 86400"));
    }
}
