//! Back-pressure: a slow sink slows the source, and memory stays bounded.
//! The simulator runs unpaced (as fast as the host takes events) with every
//! shipped plugin; the JSONL sink is the host's stdout, a pipe this test
//! reads at about 100 KB/s. The host must take far fewer events than it can
//! unthrottled, keep its resident memory flat, and speed up again as soon as
//! the reader does.

mod common;

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

fn events_in(port: u16) -> u64 {
    let (_, body) = http(port, "GET", "/api/pipeline", &[], b"").unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["events_in"].as_u64().unwrap()
}

fn rss_mib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    kib / 1024
}

#[test]
fn a_slow_sink_slows_the_source_and_memory_stays_bounded() {
    let plugins = plugins_dir(&SHIPPED);
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = HostCmd::new(plugins.path())
        .unpaced()
        .jsonl_sink("-")
        .no_watch()
        .listen(port)
        .data_dir(data.path())
        .command()
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut out = child.stdout.take().unwrap();
    let host = Running(child);
    wait_ready(port);

    // Slow reader: 10 KB every 100 ms.
    let mut buf = vec![0u8; 10_240];
    let mut read = 0usize;
    let slow =
        |out: &mut std::process::ChildStdout, secs: u64, read: &mut usize, buf: &mut [u8]| {
            let end = Instant::now() + Duration::from_secs(secs);
            while Instant::now() < end {
                *read += out.read(buf).unwrap();
                std::thread::sleep(Duration::from_millis(100));
            }
        };
    slow(&mut out, 2, &mut read, &mut buf);
    let (e0, m0) = (events_in(port), rss_mib(pid));
    slow(&mut out, 6, &mut read, &mut buf);
    let (e1, m1) = (events_in(port), rss_mib(pid));
    let throttled = (e1 - e0) as f64 / 6.0;

    // Fast reader: the host speeds up.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    let reader = std::thread::spawn(move || {
        let mut big = vec![0u8; 1 << 20];
        let mut n = 0usize;
        while !s.load(std::sync::atomic::Ordering::Relaxed) {
            match out.read(&mut big) {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
        }
        n
    });
    std::thread::sleep(Duration::from_secs(1));
    let e2 = events_in(port);
    std::thread::sleep(Duration::from_secs(3));
    let e3 = events_in(port);
    let free = (e3 - e2) as f64 / 3.0;
    let m3 = rss_mib(pid);
    eprintln!(
        "slow reader (~100 KB/s): {throttled:.0} events/s, RSS {m0} → {m1} MiB; fast reader: {free:.0} events/s, RSS {m3} MiB"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    drop(host);
    let _ = reader.join();

    assert!(read > 0, "nothing was written");
    assert!(
        free > 10.0 * throttled.max(1.0),
        "the slow sink did not slow the source: {throttled:.0} vs {free:.0} events/s"
    );
    assert!(
        m1 <= m0 + 64,
        "memory grew under back-pressure: {m0} → {m1} MiB"
    );
    assert!(m3 < 1024, "resident memory {m3} MiB");
}
