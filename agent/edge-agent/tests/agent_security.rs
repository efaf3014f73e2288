//! Security against a real mosquitto: TLS with a CA made here, username/password from a file,
//! an ACL that confines the device to its own topics; no plaintext fallback; wrong
//! credentials deliver nothing (results stay in the outbox).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Message, Mosquitto, agent, collect_until, config, run_with_timeout};
use rumqttc::{MqttOptions, TlsConfiguration, Transport};

struct Pki {
    ca: String,
    cert: String,
    key: String,
}

/// A throwaway CA and a server certificate for 127.0.0.1.
fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
    let mut ca_params = CertificateParams::new(vec![]).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.subject_alt_names.push(SanType::IpAddress([127, 0, 0, 1].into()));
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    Pki { ca: ca.pem(), cert: cert.pem(), key: key.serialize_pem() }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn secure_broker(pki: &Pki, files: &Path) -> Option<Mosquitto> {
    let ca = write(files, "ca.pem", &pki.ca);
    let cert = write(files, "server.pem", &pki.cert);
    let key = write(files, "server.key", &pki.key);
    let passwords = files.join("passwords");
    std::fs::write(&passwords, "").unwrap();
    for (user, pass) in [("dev1", "s3cret"), ("watcher", "w4tch")] {
        let ok =
            std::process::Command::new("mosquitto_passwd").args(["-b"]).arg(&passwords).args([user, pass]).status();
        if !ok.map(|s| s.success()).unwrap_or(false) {
            return None;
        }
    }
    let acl =
        write(files, "acl", "user dev1\ntopic readwrite edge-agent/dev1/#\n\nuser watcher\ntopic read edge-agent/#\n");
    Mosquitto::start_with(Some(&format!(
        "cafile {ca}\ncertfile {cert}\nkeyfile {key}\nallow_anonymous false\npassword_file {}\nacl_file {acl}",
        passwords.display()
    )))
}

fn tls_watcher(port: u16, ca: &str) -> std::sync::mpsc::Receiver<Message> {
    if rustls::crypto::ring::default_provider().install_default().is_err() {
        // already installed by an earlier test in this process
    }
    let mut opts = MqttOptions::new("watcher", "127.0.0.1", port);
    opts.set_credentials("watcher", "w4tch");
    opts.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
        ca: ca.as_bytes().to_vec(),
        alpn: None,
        client_auth: None,
    }));
    common::subscribe_with(opts, "edge-agent/#")
}

fn agent_config(port: u16, device: &str, user: &str, password_file: &str, ca_file: &str) -> String {
    let base = config(port, device, &[("objects", "nanodet", "int8")], "");
    base.replace(
        "max_backoff_secs = 1\n",
        &format!(
            "max_backoff_secs = 1\nusername = \"{user}\"\npassword_file = \"{password_file}\"\n\
             [mqtt.tls]\nca_file = \"{ca_file}\"\n"
        ),
    )
    .replace("shutdown_timeout_secs = 15", "shutdown_timeout_secs = 4")
}

fn run(cfg: &str) -> (bool, String) {
    run_with_env(cfg, None)
}

fn run_with_env(cfg: &str, credentials: Option<&Path>) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, common::with_state(cfg, dir.path())).unwrap();
    let mut cmd = agent();
    cmd.arg("run").arg("--config").arg(&path);
    if let Some(c) = credentials {
        cmd.env("CREDENTIALS_DIRECTORY", c);
    }
    let (status, _, stderr) = run_with_timeout(cmd, Duration::from_secs(300));
    (status.success(), stderr)
}

#[test]
fn tls_credentials_and_acl() {
    let files = tempfile::tempdir().unwrap();
    let pki = pki();
    let Some(broker) = secure_broker(&pki, files.path()) else {
        eprintln!("mosquitto is not installed; skipping (CI installs it)");
        return;
    };
    let ca_file = write(files.path(), "agent-ca.pem", &pki.ca);
    let good_pw = write(files.path(), "pw", "s3cret\n");
    let bad_pw = write(files.path(), "bad-pw", "guess\n");
    let rx = tls_watcher(broker.port, &pki.ca);

    // 1. the device over TLS with its password, read from a systemd credential: everything arrives
    let creds = tempfile::tempdir().unwrap();
    write(creds.path(), "mqtt-password", "s3cret\n");
    let (ok, stderr) =
        run_with_env(&agent_config(broker.port, "dev1", "dev1", "mqtt-password", &ca_file), Some(creds.path()));
    assert!(ok, "{stderr}");
    let seen =
        collect_until(&rx, Duration::from_secs(15), |m| m.topic == "edge-agent/dev1/status" && m.payload == b"offline");
    let results = seen.iter().filter(|m| m.topic == "edge-agent/dev1/detections/objects").count();
    assert_eq!(results, 7, "{seen:?}");

    // 2. the same credentials used for another device's topics: the ACL lets nothing through
    run(&agent_config(broker.port, "dev2", "dev1", &good_pw, &ca_file));
    // 3. a wrong password: refused, nothing delivered
    let (_, stderr) = run(&agent_config(broker.port, "dev1x", "dev1", &bad_pw, &ca_file));
    assert!(
        stderr.to_lowercase().contains("not authorized")
            || stderr.contains("BadUserNamePassword")
            || stderr.contains("refused"),
        "{stderr}"
    );
    let later = collect_until(&rx, Duration::from_secs(3), |_| false);
    assert!(
        later.iter().all(|m| !m.topic.starts_with("edge-agent/dev2/") && !m.topic.starts_with("edge-agent/dev1x/")),
        "the ACL or the password check let something through: {later:?}"
    );
    drop(broker);
}

#[test]
fn tls_is_never_downgraded_to_plaintext() {
    let Some(plain) = Mosquitto::start_with(None) else {
        eprintln!("mosquitto is not installed; skipping (CI installs it)");
        return;
    };
    let files = tempfile::tempdir().unwrap();
    let ca_file = write(files.path(), "ca.pem", &pki().ca);
    let pw = write(files.path(), "pw", "x");
    let rx = common::subscribe(plain.port, "plain-watch", "edge-agent/#");
    let (_, stderr) = run(&agent_config(plain.port, "tlsonly", "dev1", &pw, &ca_file));
    assert!(stderr.contains("MQTT broker unreachable"), "{stderr}");
    let seen = collect_until(&rx, Duration::from_secs(2), |_| false);
    assert!(seen.is_empty(), "something went out in plaintext: {seen:?}");
}
