//! Reports, as metrics, what the sandbox lets a plugin see. It asks for the
//! `clock` and `random` capabilities; the operator decides.
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

use rtap_sdk::prelude::*;

#[derive(Default)]
pub struct Probe;

fn random_u32() -> f64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u8(1);
    (h.finish() & 0xffff_ffff) as f64
}

impl Aggregator for Probe {
    type State = u64;
    fn describe() -> Description {
        Description::aggregator("sandbox-probe", "1.0.0")
            .tumbling(60_000)
            .capabilities(&["clock", "random"])
    }
    fn add(&self, n: &mut u64, events: &Events) {
        *n += events.len() as u64;
    }
    fn merge(&self, n: &mut u64, o: u64) {
        *n += o;
    }
    fn finish(&self, _n: u64, _w: Window, out: &mut Metrics) {
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as f64)
            .unwrap_or(-1.0);
        out.single("clock_ms", clock);
        out.single("random_a", random_u32());
        out.single("random_b", random_u32());
        out.single(
            "file_readable",
            f64::from(std::fs::read("/etc/passwd").is_ok()),
        );
        out.single("dir_listable", f64::from(std::fs::read_dir("/").is_ok()));
        out.single("env_vars", std::env::vars().count() as f64);
        out.single(
            "tcp_connect",
            f64::from(std::net::TcpStream::connect("127.0.0.1:3000").is_ok()),
        );
    }
}
rtap_sdk::export_aggregator!(Probe);
