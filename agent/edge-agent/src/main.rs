//! The `edge-agent` command line: the binary edge where errors become `anyhow` with context.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use edge_agent::config::{Precision, Tiling};
use edge_core::model::{Catalog, VerifyReport, default_models_dir};

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
        /// Run the encoder on Whisper's full 30 s window for every utterance, not on a window
        /// sized to it (slower; what the model was trained on).
        #[arg(long)]
        full_window: bool,
        #[arg(required = true)]
        wavs: Vec<PathBuf>,
    },
    /// Classify images with a backbone and a head; one JSON line per image.
    Classify {
        #[arg(long, default_value = "efficientnet-lite0")]
        model: String,
        #[arg(long, default_value = "int8")]
        precision: Precision,
        /// A head file (default: the model's shipped ImageNet head).
        #[arg(long)]
        head: Option<PathBuf>,
        #[arg(long, default_value_t = 5)]
        top_k: usize,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Train, or inspect, a classification head.
    Head {
        #[command(subcommand)]
        command: HeadCommand,
    },
    /// Make an ed25519 key pair for signing updates (`<out>.secret`, `<out>.pub`).
    Keygen {
        #[arg(long, default_value = "update-key")]
        out: PathBuf,
    },
    /// Sign a head (or a whole detection model) and send it to a device over MQTT; waits
    /// until it is active or rejected.
    Push {
        #[command(flatten)]
        target: TargetArgs,
        /// The head file (from `head train`).
        #[arg(long, required_unless_present = "model", conflicts_with = "model")]
        head: Option<PathBuf>,
        /// The slot to update (default: the head's name); with --model, the model's name.
        #[arg(long)]
        slot: Option<String>,
        /// A whole detection model (ONNX) replacing the model named by --slot.
        #[arg(long, requires_all = ["slot", "version"])]
        model: Option<PathBuf>,
        /// With --model: the precision variant it replaces.
        #[arg(long, default_value = "int8")]
        precision: Precision,
        /// With --model: its version name.
        #[arg(long)]
        version: Option<String>,
    },
    /// Tell a device to return a slot (or, with --precision, a model) to its previous version.
    Rollback {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long)]
        slot: String,
        #[arg(long)]
        precision: Option<Precision>,
    },
    /// Time every model (or --model) in tract at fp32 and int8, against onnxruntime when its
    /// venv exists (scripts/make-bench-venv.sh), and the agent end to end; prints a table.
    #[cfg(feature = "bench")]
    Bench(edge_agent::bench::cli::Args),
    /// Print this device's public key (the agent makes it in agent.state_dir on its first
    /// start), which signs its update statuses; give it to `push --device-key`.
    DeviceKey {
        #[arg(long)]
        config: PathBuf,
    },
    /// List audio capture devices, V4L2 cameras with their modes, and the decoders found.
    Devices,
    /// List or verify the installed models.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
}

#[derive(clap::Args)]
struct TargetArgs {
    /// The device's id (its `agent.device_id`).
    #[arg(long)]
    device: String,
    /// The secret key from `keygen`.
    #[arg(long, default_value = "update-key.secret")]
    key: PathBuf,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 1883)]
    port: u16,
    #[arg(long, default_value = "edge-agent")]
    prefix: String,
    /// Seconds to wait for each answer from the device.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// The device's public key (base64, or a file holding it), as `edge-agent device-key`
    /// prints it on the device: only statuses it signed are believed.
    #[arg(long)]
    device_key: Option<String>,
}

#[derive(Subcommand)]
enum HeadCommand {
    /// Fit a head on DATA/<label>/*.png|jpg with the backbone; holds out a validation split.
    Train {
        #[arg(long, default_value = "efficientnet-lite0")]
        backbone: String,
        #[arg(long, default_value = "int8")]
        precision: Precision,
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Default: the data folder's name.
        #[arg(long)]
        name: Option<String>,
        /// Default: the time, as YYYYMMDDTHHMMSSZ.
        #[arg(long)]
        version: Option<String>,
        /// Share of each label's images held out for validation.
        #[arg(long, default_value_t = 0.2)]
        holdout: f64,
        /// L2 penalty on the standardised weights.
        #[arg(long, default_value_t = 1e-3)]
        l2: f32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Print a head file's manifest.
    Info { head: PathBuf },
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Name, task, precisions and license of each model.
    List,
    /// Check every model file against the sha256 in its manifest.
    Verify,
    /// The layers of a vision model as loaded on this core, one JSON line each: node, op and
    /// the kernel that runs it (what the int8 rewrite made of the file).
    Layers {
        model: String,
        #[arg(long, default_value = "int8")]
        precision: Precision,
    },
}

fn main() -> std::process::ExitCode {
    let tuning = edge_agent::allocator::tune();
    // before any thread starts, so that all inherit it; inference threads leave it
    let scheduling = edge_agent::sched::enter(edge_agent::sched::Class::Helper);
    edge_agent::logging::init();
    if let Err(e) = scheduling {
        tracing::warn!(error = %e, "helper threads left in the default scheduling class; they may preempt inference");
    }
    match tuning {
        edge_agent::allocator::Tuning::Refused(settings) => {
            tracing::warn!(?settings, "glibc refused these malloc settings; inference may fault in fresh pages")
        }
        other => tracing::debug!(allocator = ?other, "malloc settings"),
    }
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
            let code = match config {
                Some(config) => edge_agent::app::run(&config, cli.models_dir.as_deref())?,
                None => demo(cli.models_dir.as_deref())?,
            };
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
            if let Some(t) = threshold
                && !(t > 0.0 && t < 1.0)
            {
                bail!("--threshold must be in (0, 1)");
            }
            let tiling = if no_tiling { Tiling::None } else { Tiling::default() };
            if edge_agent::cli::detect::detect_files(&catalog()?, &model, &precision, threshold, tiling, &images)? {
                return Ok(std::process::ExitCode::FAILURE);
            }
        }
        Command::Transcribe { model, precision, full_window, wavs } => {
            let catalog = catalog()?;
            let failed = edge_agent::cli::speech::transcribe_files(&catalog, &model, precision, full_window, &wavs)?;
            if failed {
                return Ok(std::process::ExitCode::FAILURE);
            }
        }
        Command::Classify { model, precision, head, top_k, images } => {
            if !(1..=100).contains(&top_k) {
                bail!("--top-k must be in [1, 100]");
            }
            let failed = edge_agent::cli::head::classify_files(
                &catalog()?,
                &model,
                &precision,
                head.as_deref(),
                top_k,
                &images,
            )?;
            if failed {
                return Ok(std::process::ExitCode::FAILURE);
            }
        }
        Command::Head {
            command: HeadCommand::Train { backbone, precision, data, out, name, version, holdout, l2, seed },
        } => {
            let args = edge_agent::cli::head::TrainArgs {
                backbone: &backbone,
                precision,
                data: &data,
                out: &out,
                name,
                version,
                holdout,
                l2,
                seed,
            };
            let report = edge_agent::cli::head::train(&catalog()?, args)?;
            println!("{}", serde_json::to_string(&report)?);
        }
        Command::Head { command: HeadCommand::Info { head } } => {
            println!("{}", serde_json::to_string_pretty(&edge_agent::cli::head::info(&head)?)?);
        }
        Command::Keygen { out } => {
            let key = edge_agent::update::sign::generate()?;
            let (secret, public) = edge_agent::update::sign::write_pair(&key, &out)?;
            eprintln!("secret key: {} (keep it off the devices)", secret.display());
            eprintln!("public key: {} (put it in the devices' updates.trusted_keys)", public.display());
            println!("{}", edge_agent::update::sign::encode_public(&key.verifying_key()));
        }
        Command::Push { target, head, slot, model, precision, version } => {
            let (t, key) = target.resolve()?;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let (name, done) = match (head, model) {
                (Some(head), _) => {
                    let bytes = std::fs::read(&head).with_context(|| format!("reading {}", head.display()))?;
                    let parsed =
                        edge_core::head::Head::from_bytes(&bytes).with_context(|| head.display().to_string())?;
                    let slot = slot.unwrap_or(parsed.manifest.name.clone());
                    let push = edge_agent::update::push::push_head(&t, &key, &slot, &bytes, print_status);
                    let done = rt.block_on(push)?;
                    (slot, done)
                }
                (None, Some(model)) => {
                    let bytes = std::fs::read(&model).with_context(|| format!("reading {}", model.display()))?;
                    let (name, version) = (slot.unwrap_or_default(), version.unwrap_or_default());
                    let push = edge_agent::update::push::push_model(
                        &t,
                        &key,
                        &name,
                        precision,
                        &version,
                        &bytes,
                        print_status,
                    );
                    let done = rt.block_on(push)?;
                    (name, done)
                }
                (None, None) => bail!("give --head FILE or --model FILE"),
            };
            eprintln!("{name}: version {} active on {}", done.version.unwrap_or_default(), t.device);
        }
        Command::Rollback { target, slot, precision } => {
            let (t, key) = target.resolve()?;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let done = rt.block_on(edge_agent::update::push::rollback(&t, &key, &slot, precision, print_status))?;
            eprintln!("{slot}: back to {} on {}", done.version.unwrap_or_default(), t.device);
        }
        #[cfg(feature = "bench")]
        Command::Bench(args) => edge_agent::bench::cli::run(&catalog()?, args)?,
        Command::DeviceKey { config } => {
            let raw = edge_agent::config::load_raw(&config)?;
            let state_dir = raw["agent"]["state_dir"]
                .as_str()
                .map(PathBuf::from)
                .unwrap_or_else(|| edge_agent::config::AgentSettings::default().state_dir);
            // only read: made here by another user, the service could not read it
            let file = state_dir.join("device.secret");
            let key = edge_agent::update::sign::read_secret(&file).with_context(|| {
                format!(
                    "reading {} (the agent makes it on its first start; run this as root or as the service's user)",
                    file.display()
                )
            })?;
            println!("{}", edge_agent::update::sign::encode_public(&key.verifying_key()));
        }
        Command::Devices => {
            println!("audio capture devices (a microphone source's `device`):");
            for name in edge_core::audio::microphone::devices() {
                println!("  {name}");
            }
            println!("video devices (a camera source's `index`):");
            let videos = edge_core::source::video_devices();
            if videos.is_empty() {
                println!("  none (/sys/class/video4linux is empty)");
            }
            for v in videos {
                println!("  {} /dev/video{} {}", v.index, v.index, v.name);
                for m in &v.modes {
                    println!("      {m}");
                }
                if v.modes.is_empty() && !cfg!(feature = "camera") {
                    println!("      (modes: build with --features camera)");
                }
            }
            for tool in ["ffmpeg", "gst-launch-1.0", "rpicam-vid", "libcamera-vid"] {
                let found = edge_core::source::command::find_program(tool);
                println!("{tool}: {}", found.map_or("not found".to_string(), |p| p.display().to_string()));
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
        Command::Models { command: ModelsCommand::Layers { model, precision } } => {
            let catalog = catalog()?;
            let entry = catalog.get(&model).with_context(|| {
                format!("no vision model named {model:?} (available: {})", catalog.names().join(", "))
            })?;
            let loaded = edge_core::model::LoadedModel::load(std::sync::Arc::new(entry.clone()), precision)
                .with_context(|| format!("loading {model}"))?;
            for layer in loaded.layers() {
                println!("{}", serde_json::to_string(&layer)?);
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

impl TargetArgs {
    fn resolve(self) -> Result<(edge_agent::update::push::Target, ed25519_dalek::SigningKey)> {
        let key = edge_agent::update::sign::read_secret(&self.key)?;
        let device_key = match &self.device_key {
            None => {
                eprintln!("warning: no --device-key: the device's statuses cannot be told from forged ones");
                None
            }
            Some(text) => {
                let b64 = if std::path::Path::new(text).is_file() {
                    std::fs::read_to_string(text).with_context(|| format!("reading --device-key {text}"))?
                } else {
                    text.clone()
                };
                Some(edge_agent::update::sign::public_key(&b64).context("--device-key")?)
            }
        };
        let target = edge_agent::update::push::Target {
            host: self.host,
            port: self.port,
            prefix: self.prefix,
            device: self.device,
            timeout: std::time::Duration::from_secs(self.timeout.max(1)),
            device_key,
        };
        Ok((target, key))
    }
}

fn print_status(s: &edge_agent::update::protocol::Status) {
    match serde_json::to_string(s) {
        Ok(line) => println!("{line}"),
        Err(e) => eprintln!("status not serialisable: {e}"),
    }
}

/// `run` without a config: the demo, in builds that have it.
#[cfg(feature = "demo")]
fn demo(models_dir: Option<&std::path::Path>) -> Result<std::process::ExitCode> {
    edge_agent::app::finish(edge_agent::app::runtime()?, edge_agent::demo::run(models_dir))
}

#[cfg(not(feature = "demo"))]
fn demo(_: Option<&std::path::Path>) -> Result<std::process::ExitCode> {
    bail!("no --config given, and this build has no demo: pass --config FILE, or build with `--features demo`")
}
