//! Kafka over TLS and with SASL. tansu (the test broker) authenticates with
//! SASL SCRAM (`--authentication`) but its TLS options do not take effect
//! in the build the tests install, and its users cannot be created while
//! authentication is on (`tansu user create` is refused by the same
//! broker). So: TLS end to end through a real TLS terminator (socat with a
//! certificate made here; tansu advertises the terminator, so every
//! connection of the host is TLS) — events in, metrics out, offsets
//! committed; a CA that did not sign the broker's certificate, and SCRAM
//! credentials tansu does not know, each stop the start with a message
//! saying why.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// A CA and a certificate for 127.0.0.1/localhost it signed: (CA PEM,
/// certificate + key PEM).
fn certificates() -> (String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    // Not the default name, which the certificate below has too: OpenSSL
    // would take the certificate for self-signed.
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "rtap test CA");
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    (ca.pem(), format!("{}{}", cert.pem(), key.serialize_pem()))
}

fn host(plugins: &Path, data: &Path, broker: &str, options: &[(&str, &str)]) -> HostCmd {
    let mut h = HostCmd::new(plugins)
        .kafka_brokers(broker)
        .out_of_orderness("5s")
        .no_watch()
        .no_server()
        .jsonl_sink("/dev/null")
        .data_dir(data);
    for (k, v) in options {
        h = h.args(["--kafka-option", &format!("{k}={v}")]);
    }
    h
}

#[test]
fn the_host_runs_over_tls_and_refuses_an_untrusted_broker() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert) = certificates();
    let (ca_file, cert_file) = (dir.path().join("ca.pem"), dir.path().join("broker.pem"));
    std::fs::write(&ca_file, ca).unwrap();
    std::fs::write(&cert_file, cert).unwrap();
    let broker = Broker::start_behind_tls(&cert_file, &ca_file);
    broker.create_events_topic();
    let lines = gen_events(3_000, 3, 100);
    broker.produce(&lines, 0);

    let plugins = plugins_dir(&["page-views"]);
    let data = tempfile::tempdir().unwrap();
    let tls = [
        ("security.protocol", "ssl"),
        ("ssl.ca.location", ca_file.to_str().unwrap()),
    ];
    let mut h = host(plugins.path(), data.path(), &broker.addr(), &tls).watched();
    let deadline = Instant::now() + Duration::from_secs(60);
    while broker.committed("rtap") < lines.len() as i64 {
        assert!(h.alive(), "the host stopped: {}", h.log.join("\n"));
        assert!(
            Instant::now() < deadline,
            "committed {} of {}",
            broker.committed("rtap"),
            lines.len()
        );
        h.wait_for("\u{0}", 1, Duration::from_millis(300));
    }
    sigterm(h.child.id());
    let (st, log) = h.finish(Duration::from_secs(30));
    assert!(st.success(), "{}", log.join("\n"));
    let metrics = broker.read_records("processed-metrics", 6);
    assert!(
        metrics.len() > 20,
        "only {} metrics over TLS",
        metrics.len()
    );

    // A CA that did not sign the broker's certificate.
    let (other_ca, _) = certificates();
    let other = dir.path().join("other-ca.pem");
    std::fs::write(&other, other_ca).unwrap();
    let wrong = [
        ("security.protocol", "ssl"),
        ("ssl.ca.location", other.to_str().unwrap()),
    ];
    let data = tempfile::tempdir().unwrap();
    let out = host(plugins.path(), data.path(), &broker.addr(), &wrong).output();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("certificate verify failed"), "{err}");
    assert!(err.contains(&format!("brokers {}", broker.addr())), "{err}");
}

#[test]
fn credentials_the_broker_does_not_know_stop_the_start() {
    let broker = Broker::start_with(&["--authentication"]);
    let plugins = plugins_dir(&["page-views"]);
    let data = tempfile::tempdir().unwrap();
    let sasl = [
        ("security.protocol", "sasl_plaintext"),
        ("sasl.mechanism", "SCRAM-SHA-256"),
        ("sasl.username", "alice"),
        ("sasl.password", "not-her-password"),
    ];
    let started = Instant::now();
    let out = host(plugins.path(), data.path(), &broker.addr(), &sasl).output();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("SASL") && err.contains("authentication failed"),
        "{err}"
    );
    assert!(
        !err.contains("not-her-password"),
        "the password must not be printed: {err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}
