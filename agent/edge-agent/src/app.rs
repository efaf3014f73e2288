//! The agent's lifecycle: load and validate config, load models, connect to the broker,
//! spawn pipelines, publish stats, and stop cleanly.
//!
//! Shutdown (on SIGINT/SIGTERM, or when every finite source has ended): the cancellation
//! token reaches the sources only; each inference thread drains its link and ends; the results
//! channel closes and the publisher drains it into MQTT; the client says `offline` and
//! disconnects. All of it is bounded by `agent.shutdown_timeout_secs`.

use std::future::Future;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::mqtt::{Outgoing, Topics};
use crate::pipeline::Running;
use crate::sink::SinkContext;
use edge_core::model::{Catalog, default_models_dir};

/// Messages queued between the pipelines and the MQTT publisher.
const RESULTS_CHANNEL: usize = 64;

/// Loads a config file, validated against the models it names.
pub fn load_config(path: &Path, models_dir: Option<&Path>) -> Result<Config> {
    let raw = crate::config::load_raw(path)?;
    let dir = models_dir
        .map(Path::to_path_buf)
        .or_else(|| raw.pointer("/agent/models_dir").and_then(|v| v.as_str()).map(Into::into))
        .unwrap_or_else(default_models_dir);
    let catalog = Catalog::open(&dir).with_context(|| format!("reading models in {}", dir.display()))?;
    let mut config = crate::config::validate::check(raw, &catalog)
        .map_err(|issues| crate::config::ConfigError::Invalid { file: path.to_path_buf(), issues })?;
    config.agent.models_dir = Some(dir);
    Ok(config)
}

/// The async runtime of `run` (and the demo): two workers, in the background scheduling class.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("edge-rt")
        .on_thread_start(crate::sched::background_thread)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// `edge-agent run --config FILE`.
pub fn run(path: &Path, models_dir: Option<&Path>) -> Result<ExitCode> {
    let config = load_config(path, models_dir)?;
    let rt = runtime()?;
    // the handlers are installed now, before any pipeline runs: a SIGTERM that comes while
    // models load or frames already flow must stop the agent cleanly, not kill it
    let stop = {
        let _inside = rt.enter();
        shutdown_signal()
    };
    finish(rt, serve(config, stop))?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `main` to its end, then lets the runtime go without waiting for blocking work still
/// running: past the stop deadline a pipeline thread may still be busy (a long transcription),
/// and dropping the runtime would wait for it, so the deadline would not be one.
pub fn finish<T>(rt: tokio::runtime::Runtime, main: impl std::future::Future<Output = T>) -> T {
    let outcome = rt.block_on(main);
    rt.shutdown_timeout(Duration::from_millis(500));
    outcome
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called (inside the
/// runtime), not when the future is first polled: `serve` polls it only once its pipelines run.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let watched = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()));
        async move {
            match watched {
                (Ok(mut int), Ok(mut term)) => {
                    tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
                }
                (int, term) => {
                    let e = int.err().or(term.err()).map(|e| e.to_string()).unwrap_or_default();
                    tracing::warn!(error = %e, "cannot watch SIGINT or SIGTERM; falling back to Ctrl-C");
                    if let Err(e) = tokio::signal::ctrl_c().await {
                        tracing::error!(error = %e, "cannot watch Ctrl-C either");
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Runs `config` until every pipeline's source ends or `shutdown` resolves.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> Result<()> {
    let models_dir = config.agent.models_dir.clone().unwrap_or_else(default_models_dir);
    let catalog = Catalog::open(&models_dir)?;
    let web = &config.web;
    let credentials_file = web.credentials_file.as_deref().map(crate::mqtt::credential_path);
    let credentials = crate::web::Credentials::load(web.auth, credentials_file.as_deref())
        .context("loading the status page's credentials (web.credentials_file)")?;
    let view = web.listen.map(|_| page_view(&config));
    let device = config.agent.device_id.clone();
    let topics = Topics::new(&config.mqtt.prefix, &device);
    let ha = &config.homeassistant;
    let components = ha.enabled.then(|| {
        crate::homeassistant::Components::of(&config, &catalog, &topics, crate::health::cpu_temp_c().is_some())
    });
    // reads and writes the components file: kept off the runtime's workers
    let (settings, dev, t, state_dir) = (ha.clone(), device.clone(), topics.clone(), config.agent.state_dir.clone());
    let discovery =
        tokio::task::spawn_blocking(move || crate::homeassistant::prepare(&settings, components, &dev, &t, &state_dir))
            .await?;
    // building loads models: blocking work, kept off the runtime's workers
    let build_config = config.clone();
    let crate::pipeline::Built { pipelines, slots, models } = tokio::task::spawn_blocking(move || {
        let built = crate::pipeline::build_all(&build_config, &catalog);
        // what loading freed (protos, unoptimised graphs) is not needed again
        edge_core::heap::release_free();
        built
    })
    .await?
    .map_err(|errors| anyhow!("{}", errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")))?;
    let outbox_dir = config.agent.state_dir.join("outbox");
    let outbox = crate::outbox::Outbox::open(&outbox_dir, config.outbox.max_mb << 20, config.outbox.segment_kb << 10)
        .with_context(|| format!("opening the outbox in {} (agent.state_dir)", outbox_dir.display()))?
        .with_durability(config.outbox.durability());
    if !outbox.is_empty() {
        tracing::info!(messages = outbox.stats().messages, "results from an earlier run wait in the outbox");
    }
    let mut subscriptions = vec![topics.commands(), topics.model_updates()];
    let birth_topic = ha.enabled.then(|| ha.birth_topic());
    subscriptions.extend(birth_topic.clone());
    let (conn, crate::mqtt::Channels { incoming, returned }) =
        crate::mqtt::connect(&config.mqtt, &device, topics.clone(), subscriptions)?;
    let conn = Arc::new(conn);

    let cancel = CancellationToken::new();
    let (results_tx, results_rx) = mpsc::channel::<Outgoing>(RESULTS_CHANNEL);
    let sinks = SinkContext {
        device: device.clone(),
        topics: topics.clone(),
        results: results_tx.clone(),
        base_dir: config.agent.state_dir.clone(),
        camera: false,
        view: view.clone(),
    };
    let mut running = Vec::new();
    for p in pipelines {
        let name = p.name.clone();
        running.push(p.spawn(cancel.clone(), &sinks).with_context(|| format!("starting pipeline {name}"))?);
    }
    drop(sinks);
    tracing::info!(pipelines = running.len(), device = %device, "agent running");

    let deadline = Duration::from_secs_f64(config.agent.shutdown_timeout_secs);
    let publisher = crate::publisher::Publisher::new(conn.clone(), outbox, returned);
    let outbox_stats = publisher.stats_handle();
    // the backlog may use up to half of the stop deadline; the rest is for draining pipelines
    let publisher = tokio::spawn(publisher.run(results_rx, deadline / 2));
    let health = Arc::new(crate::health::Health {
        device: device.clone(),
        started: Instant::now(),
        pipelines: running.iter().map(|r| (r.name.clone(), r.stats.clone())).collect(),
        outbox: outbox_stats,
        connected: conn.connected(),
    });
    if let (Some(addr), Some(hub)) = (web.listen, &view) {
        let open = credentials.is_none();
        let state = crate::web::Web::new(health.clone(), hub.clone(), web.frame_width, cancel.clone());
        let bound = crate::web::start(addr, crate::web::router(state, credentials), cancel.clone())
            .await
            .with_context(|| format!("serving the status page on {addr} (web.listen)"))?;
        tracing::info!(url = %format!("http://{bound}/"), "status page");
        if open && !bound.ip().is_loopback() {
            tracing::warn!(%bound, "the status page is reachable from the network without auth (web.auth)");
        }
    }
    if let Some(addr) = config.agent.metrics_listen {
        crate::web::start(addr, crate::web::metrics_router(health.clone()), cancel.clone())
            .await
            .with_context(|| format!("serving /metrics on {addr} (agent.metrics_listen)"))?;
        tracing::info!(%addr, "serving /metrics");
    }
    let stats_task = tokio::spawn(publish_stats(
        health.clone(),
        topics.stats(),
        results_tx.clone(),
        Duration::from_secs_f64(config.agent.stats_interval_secs),
        cancel.clone(),
    ));
    // updates are verified and applied on their own thread (file and model work is blocking)
    let (updates_tx, updates_rx) = crossbeam_channel::bounded(UPDATE_QUEUE);
    let device_key = crate::update::sign::device_key(&config.agent.state_dir).with_context(|| {
        format!(
            "the device's status key in {} (agent.state_dir; remove a damaged device.secret to make a new one)",
            config.agent.state_dir.display()
        )
    })?;
    tracing::info!(key = %crate::update::sign::encode_public(&device_key.verifying_key()), "device key (update statuses are signed with it; `push --device-key`)");
    let manager = crate::update::manager::Manager::new(
        &device,
        topics.clone(),
        config.updates.clone(),
        slots.slots.clone(),
        models,
        results_tx.clone(),
    )
    .with_view(view.clone())
    .with_device_key(device_key);
    let events = slots.events.clone();
    let updates_thread = std::thread::Builder::new()
        .name("updates".into())
        .spawn(move || manager.run(updates_rx, events))
        .context("starting the updates thread")?;
    let (births_tx, births_rx) = mpsc::channel(1);
    if let Some(d) = discovery {
        let delay = Duration::from_secs_f64(config.homeassistant.birth_delay_secs);
        let (results, connected) = (results_tx.clone(), conn.connected());
        tokio::spawn(crate::homeassistant::run(d, delay, results, connected, births_rx, cancel.clone()));
    }
    let router = Router {
        health: health.clone(),
        topics: topics.clone(),
        results: results_tx.clone(),
        updates: updates_tx,
        births: birth_topic.map(|t| (t, births_tx)),
    };
    let commands_task = tokio::spawn(handle_commands(incoming, router, cancel.clone()));
    drop(results_tx);

    let notifier = Arc::new(crate::sdnotify::Notifier::from_env());
    notifier.notify(&format!("READY=1\nSTATUS=running {} pipeline(s)", health.pipelines.len()));
    if let Some(period) = crate::sdnotify::Notifier::watchdog_period() {
        tokio::spawn(watchdog(notifier.clone(), health.clone(), period, cancel.clone()));
    }

    let names: Vec<String> = running.iter().map(|r| r.name.clone()).collect();
    let mut joined = tokio::task::spawn_blocking(move || running.into_iter().map(Running::join).collect::<Vec<_>>());
    let outcome = tokio::select! {
        r = &mut joined => Some(r),
        _ = shutdown => { tracing::info!("stopping"); None }
    };
    notifier.notify("STOPPING=1");
    cancel.cancel();
    let started = Instant::now();
    let drained = tokio::time::timeout(deadline, async {
        let results = match outcome {
            Some(r) => r,
            None => joined.await,
        }?;
        stats_task.await?;
        commands_task.await?;
        // the commands task held the updates queue: the manager ends when it has drained it
        tokio::task::spawn_blocking(move || updates_thread.join())
            .await?
            .map_err(|_| anyhow!("the updates thread panicked"))?;
        let mut outbox = publisher.await?;
        let conn = Arc::into_inner(conn).ok_or_else(|| anyhow!("MQTT connection still shared at shutdown"))?;
        keep_unacknowledged(conn.close().await?, &mut outbox);
        if let Err(e) = outbox.close() {
            tracing::error!(error = %e, "cannot sync the outbox at stop");
        }
        anyhow::Ok(results)
    })
    .await;
    let results = match drained {
        Ok(r) => r?,
        Err(_) => return Err(anyhow!("shutdown did not finish within {deadline:?}; exiting anyway")),
    };
    tracing::info!(ms = started.elapsed().as_millis() as u64, "stopped");
    for (name, s) in &health.pipelines {
        tracing::info!(pipeline = %name, stats = ?s.snapshot(), "final");
    }
    let failures: Vec<String> = results.into_iter().filter_map(Result::err).map(|e| e.to_string()).collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(anyhow!("{} of {} pipelines failed:\n{}", failures.len(), names.len(), failures.join("\n")))
    }
}

/// Results the broker had not acknowledged at stop go to the outbox, for the next start. Retained
/// state is not kept: the next start announces its own.
fn keep_unacknowledged(left: Vec<Outgoing>, outbox: &mut crate::outbox::Outbox) {
    let results: Vec<Outgoing> = left.into_iter().filter(|m| !m.retain).collect();
    if results.is_empty() {
        return;
    }
    let mut lost = 0;
    for msg in &results {
        if let Err(e) = outbox.push(msg) {
            tracing::error!(error = %e, topic = %msg.topic, "cannot keep an unacknowledged result");
            lost += 1;
        }
    }
    tracing::info!(messages = results.len() - lost, "results not acknowledged by the broker wait in the outbox");
}

/// The status page's state for `config`'s pipelines.
fn page_view(config: &Config) -> Arc<crate::view::Hub> {
    let specs = config
        .pipelines
        .iter()
        .map(|(name, p)| crate::view::PipelineSpec {
            name: name.clone(),
            audio: p.source.is_audio(),
            zones: serde_json::to_value(&p.zones).unwrap_or_default(),
        })
        .collect();
    Arc::new(crate::view::Hub::new(specs, config.web.frame_fps))
}

/// Publishes the retained stats every `every`, and once more when cancelled.
async fn publish_stats(
    health: Arc<crate::health::Health>,
    topic: String,
    results: mpsc::Sender<Outgoing>,
    every: Duration,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        let last = tokio::select! { _ = tick.tick() => false, _ = cancel.cancelled() => true };
        if let Some(payload) = json(&health.message(), "stats")
            && results.send(Outgoing { topic: topic.clone(), payload, retain: true }).await.is_err()
        {
            return;
        }
        if last {
            return;
        }
    }
}

/// Update requests waiting for the updates thread; more are refused with a log line (the
/// push client waits for each answer, so this only fills under abuse).
const UPDATE_QUEUE: usize = 16;

/// Where incoming messages go.
struct Router {
    health: Arc<crate::health::Health>,
    topics: Topics,
    results: mpsc::Sender<Outgoing>,
    updates: crossbeam_channel::Sender<crate::update::manager::Incoming>,
    /// Home Assistant's birth topic, and the discovery task's wake-up.
    births: Option<(String, mpsc::Sender<()>)>,
}

/// Answers commands and hands update requests to the updates thread, until cancelled. Bad
/// payloads get an error ack and a log line.
async fn handle_commands(mut incoming: mpsc::Receiver<rumqttc::Publish>, router: Router, cancel: CancellationToken) {
    use crate::commands::{Ack, CommandKind, parse, salvage_id};
    let Router { health, topics, results, updates, births } = router;
    let base = topics.base();
    loop {
        let msg = tokio::select! {
            m = incoming.recv() => match m { Some(m) => m, None => return },
            _ = cancel.cancelled() => return,
        };
        if let Some((topic, wake)) = &births
            && msg.topic == *topic
        {
            // a birth while one is pending is the same birth
            if msg.payload.as_ref() == b"online" {
                wake.try_send(()).ok();
            }
            continue;
        }
        if crate::update::protocol::slot_of_topic(&base, &msg.topic).is_some() {
            let m = crate::update::manager::Incoming { topic: msg.topic.clone(), payload: msg.payload.to_vec() };
            if updates.try_send(m).is_err() {
                tracing::warn!(topic = %msg.topic, "update request dropped: the updates queue is full");
            }
            continue;
        }
        let ack = match parse(&msg.payload) {
            Ok(cmd) => {
                if cmd.kind == CommandKind::PublishStats {
                    if let Some(payload) = json(&health.message(), "stats")
                        && results.send(Outgoing { topic: topics.stats(), payload, retain: true }).await.is_err()
                    {
                        return;
                    }
                }
                Ack { id: cmd.id, ok: true, error: None }
            }
            Err(e) => {
                tracing::warn!(topic = %msg.topic, error = %e, "bad command");
                Ack { id: salvage_id(&msg.payload), ok: false, error: Some(e.to_string()) }
            }
        };
        let Some(payload) = json(&ack, "command ack") else { continue };
        if results.send(Outgoing { topic: topics.command_acks(), payload, retain: false }).await.is_err() {
            return;
        }
    }
}

/// Sends systemd keep-alives every `period` while the pipelines make progress; a stalled
/// pipeline (frames waiting, none finishing) stops them, and systemd restarts the agent.
async fn watchdog(
    notifier: Arc<crate::sdnotify::Notifier>,
    health: Arc<crate::health::Health>,
    period: Duration,
    cancel: CancellationToken,
) {
    // keep-alives go out every half watchdog period; a stall is a whole period without progress
    let mut progress = crate::sdnotify::Progress::new(period * 2);
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! { _ = tick.tick() => {}, _ = cancel.cancelled() => return }
        let snapshots: Vec<_> = health.pipelines.values().map(|p| p.snapshot()).collect();
        if progress.healthy(&snapshots) {
            notifier.notify("WATCHDOG=1");
        } else {
            tracing::warn!("a pipeline made no progress in {:?}; withholding the watchdog keep-alive", period * 2);
        }
    }
}

/// `value` as JSON; a failure is logged and the message not sent (an empty payload would be
/// read as a broken one).
fn json(value: &impl serde::Serialize, what: &str) -> Option<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| tracing::error!(error = %e, "{what} not serialisable; not sent")).ok()
}
