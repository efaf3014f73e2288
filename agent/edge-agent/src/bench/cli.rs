//! `edge-agent bench`: what the command line asks for, checked, then run. The hidden
//! `--child-*` modes are this same program serving one variant to the parent that times
//! them side by side ([`super::rounds`]).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::config::Precision;
use edge_core::model::Catalog;
use edge_core::model::Int8Exec;

/// The command line's arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// A model (repeatable; default: all). `whisper-tiny-en` is its encoder and its decoder
    /// step, `whisper-tiny-en/decoder` one of them.
    #[arg(long)]
    pub model: Vec<String>,
    /// Threads for one inference.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Timed runs after three warm-ups.
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// One JSON object per model instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also write the measurements as CSV.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Skip onnxruntime.
    #[arg(long)]
    pub no_reference: bool,
    /// Skip the end-to-end run.
    #[arg(long)]
    pub no_e2e: bool,
    /// Time another graph file for a precision, e.g. `int8=my-quantization.onnx` (with one
    /// --model; onnxruntime times it too).
    #[arg(long, value_name = "PRECISION=PATH")]
    pub file: Vec<String>,
    /// Instead of timing, show where each variant's inference time goes, by op kind.
    #[arg(long)]
    pub profile: bool,
    #[arg(long, hide = true)]
    pub child_variant: Option<Precision>,
    #[arg(long, hide = true)]
    pub child_fake_quant: bool,
    #[arg(long, hide = true)]
    pub child_e2e: Option<Precision>,
}

/// Runs `edge-agent bench` over the models of `catalog`.
pub fn run(catalog: &Catalog, args: Args) -> Result<()> {
    let Args {
        model,
        threads,
        runs,
        json,
        csv,
        no_reference,
        no_e2e,
        file,
        profile,
        child_variant,
        child_fake_quant,
        child_e2e,
    } = args;
    if !(1..=256).contains(&threads) || !(1..=10_000).contains(&runs) {
        bail!("--threads must be in [1, 256] and --runs in [1, 10000]");
    }
    let mut targets = super::select(catalog, &model)?;
    if !file.is_empty() {
        let [target] = &mut targets[..] else { bail!("--file needs exactly one --model") };
        for f in &file {
            let (p, path) = f.split_once('=').context("--file wants PRECISION=PATH")?;
            let precision: Precision = p.parse().map_err(|e| anyhow::anyhow!("--file {f}: {e}"))?;
            target.files.insert(precision, (std::fs::canonicalize(path).with_context(|| path.to_string())?, None));
        }
    }
    let opts = super::Options { threads, runs, reference: !no_reference, e2e: !no_e2e };
    if let Some(precision) = child_variant {
        let target = targets.first().context("--child-variant needs --model")?;
        let exec = if child_fake_quant { Int8Exec::FakeQuant } else { Int8Exec::Integer };
        super::serve_variant(target, &precision, exec, &opts)?;
        return Ok(());
    }
    if profile {
        for target in &targets {
            for (key, precision, exec) in super::variants(target) {
                let Some((path, _)) = target.files.get(&precision) else { continue };
                let rows = edge_core::model::with_threads(threads, || {
                    let plan = super::plan(target, path, exec)?;
                    super::profile::by_op(&plan, &super::feed(target)?, runs)
                })
                .with_context(|| format!("profiling {} {key}", target.name))?;
                print!("{}", super::profile::table(&format!("{} {key}", target.name), &rows, 12));
            }
        }
        return Ok(());
    }
    if let Some(precision) = child_e2e {
        let target = targets.first().context("--child-e2e needs --model")?;
        let e2e = super::e2e::interleaved(catalog, target, precision, &opts)?;
        println!("{}", serde_json::to_string(&e2e)?);
        return Ok(());
    }
    let exe = std::env::current_exe().context("finding this program to run the measurements")?;
    let overrides: Vec<String> = file.iter().flat_map(|f| ["--file".to_string(), f.clone()]).collect();
    let mut reports = Vec::new();
    for target in &targets {
        eprintln!("bench: {} ...", target.name);
        let report = super::report(&exe, &overrides, target, &opts);
        if json {
            println!("{}", serde_json::to_string(&report)?);
        }
        reports.push(report);
    }
    if !json {
        print!("{}", super::print_table(&reports));
    }
    if let Some(path) = csv {
        std::fs::write(&path, super::csv(&reports)).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
