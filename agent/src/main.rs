//! The `edge-agent` command line: the binary edge where errors become `anyhow` with context.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use edge_agent::config::{DetectStage, Precision, Tiling};
use edge_agent::model::{Catalog, ModelPool, VerifyReport, default_models_dir};
use edge_agent::vision::detector::Detector;

#[derive(Parser)]
#[command(name = "edge-agent", version, about = "Pretrained int8 models on edge devices, results over MQTT")]
struct Cli {
    /// Folder of models (each a sub-folder with manifest.toml). Default: $EDGE_AGENT_MODELS,
    /// ./models, /usr/share/edge-agent/models.
    #[arg(long, global = true)]
    models_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipelines of a config file; without --config, run the built-in demo
    /// (an in-process broker, the bundled photos, the messages printed).
    Run {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Check a config file and report every problem, without running anything.
    Validate {
        #[arg(long)]
        config: PathBuf,
    },
    /// Detect objects in images; one JSON line per image.
    Detect {
        #[arg(long, default_value = "nanodet")]
        model: String,
        #[arg(long, default_value = "int8")]
        precision: Precision,
        /// Minimum score (default: the model's own).
        #[arg(long)]
        threshold: Option<f32>,
        /// Look at the whole frame only, without tiles.
        #[arg(long)]
        no_tiling: bool,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Transcribe WAV files (speech cut by voice activity, then Whisper); one JSON line per file.
    Transcribe {
        #[arg(long, default_value = "whisper-tiny-en")]
        model: String,
        #[arg(long, default_value = "int8")]
        precision: Precision,
        #[arg(required = true)]
        wavs: Vec<PathBuf>,
    },
    /// List the audio capture devices (names for a microphone source's `device`).
    Devices,
    /// List or verify the installed models.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Name, task, precisions and license of each model.
    List,
    /// Check every model file against the sha256 in its manifest.
    Verify,
}

fn main() -> std::process::ExitCode {
    edge_agent::logging::init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<std::process::ExitCode> {
    let models_dir = cli.models_dir.clone().unwrap_or_else(default_models_dir);
    let catalog = || Catalog::open(&models_dir).with_context(|| format!("reading models in {}", models_dir.display()));
    match cli.command {
        Command::Run { config } => {
            let code = edge_agent::app::run(config.as_deref(), cli.models_dir.as_deref())?;
            return Ok(code);
        }
        Command::Validate { config } => {
            let config = edge_agent::app::load_config(&config, cli.models_dir.as_deref())?;
            println!(
                "ok: {} pipeline(s): {}",
                config.pipelines.len(),
                config.pipelines.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        }
        Command::Detect { model, precision, threshold, no_tiling, images } => {
            let catalog = catalog()?;
            let entry = catalog
                .get(&model)
                .with_context(|| format!("no model named {model:?} (available: {})", catalog.names().join(", ")))?;
            if let Some(t) = threshold
                && !(t > 0.0 && t < 1.0)
            {
                bail!("--threshold must be in (0, 1)");
            }
            let shared = ModelPool::default().get_or_load(entry, &precision)?;
            let stage = DetectStage {
                model: model.clone(),
                precision,
                threshold,
                nms_iou: 0.5,
                classes: vec![],
                max_detections: 100,
                tiling: if no_tiling { Tiling::None } else { Tiling::default() },
            };
            let detector = Detector::new(shared, stage);
            let mut failed = false;
            for path in images {
                let result = edge_agent::source::decode_image_file(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|img| detector.detect(&img).map(|out| (img, out)).map_err(|e| e.to_string()));
                let line = match result {
                    Ok((img, out)) => {
                        let line = edge_agent::mqtt::payload::detect_line(&path.display().to_string(), &img, &out);
                        serde_json::to_value(line)?
                    }
                    Err(e) => {
                        failed = true;
                        error_line(&path, &e)
                    }
                };
                println!("{line}");
            }
            if failed {
                return Ok(std::process::ExitCode::FAILURE);
            }
        }
        Command::Transcribe { model, precision, wavs } => {
            let catalog = catalog()?;
            let failed = edge_agent::speech::cli::transcribe_files(&catalog, &model, precision, &wavs)?;
            if failed {
                return Ok(std::process::ExitCode::FAILURE);
            }
        }
        Command::Devices => {
            for name in edge_agent::audio::microphone::devices() {
                println!("{name}");
            }
        }
        Command::Models { command: ModelsCommand::List } => {
            for m in catalog()?.summaries() {
                println!(
                    "{:<16} {:<8} {:<13} {:<10} {:<11} {}",
                    m.name, m.version, m.task, m.precisions, m.license, m.description
                );
            }
        }
        Command::Models { command: ModelsCommand::Verify } => {
            let mut bad = 0;
            for (name, precision, path, report) in catalog()?.verify() {
                match report {
                    VerifyReport::Ok => println!("ok       {name} {precision} {}", path.display()),
                    VerifyReport::Missing { hint } => {
                        bad += 1;
                        println!(
                            "MISSING  {name} {precision} {} (make it with {})",
                            path.display(),
                            hint.unwrap_or_default()
                        );
                    }
                    VerifyReport::Mismatch { expected, actual } => {
                        bad += 1;
                        println!(
                            "CORRUPT  {name} {precision} {}: sha256 {actual}, manifest says {expected}",
                            path.display()
                        );
                    }
                }
            }
            if bad > 0 {
                eprintln!("error: {bad} model file(s) failed verification");
                return Ok(std::process::ExitCode::FAILURE);
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn error_line(path: &std::path::Path, message: &str) -> serde_json::Value {
    serde_json::json!({ "source": path.display().to_string(), "error": message })
}
