//! The built-in simulator of the seed's website-analytics events.
//!
//! Many users with sessions that walk a conversion funnel (session_start →
//! page_view/click → add_to_cart → purchase → session_end), log-normal
//! latencies, and a scripted incident cycle so that every shipped alert fires
//! within minutes of a demo:
//!
//! | cycle time (10 min cycle) | what happens                   | alert            |
//! |---------------------------|--------------------------------|------------------|
//! | every 30 s                | a bot bursts 40 page views/5 s | bot-burst        |
//! | 1:00 – 4:00               | latency ×8 (P95 > 500 ms)      | high-latency     |
//! | 1:30 – 4:30               | 4 % of events are errors        | error-rate-spike |
//! | 2:00 – 8:00               | traffic drops to 100 events/s  | low-throughput   |
//! | always                    | ~60 % of carts are abandoned    | cart-abandonment |
//!
//! Event time is a simulated clock that advances by `1 / rate` per event from
//! the start time, so with `--seed` the stream is reproducible; a paced
//! simulator waits for the wall clock to catch up with it. 2 % of events are
//! delayed by up to 1.5 s (out of order) and 0.05 % by up to 30 s (late).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Position, Source, SourceError, decode};
use crate::event::{EventBatch, Origin};

const PAGES: [&str; 12] = [
    "/",
    "/products",
    "/search",
    "/blog",
    "/about",
    "/cart",
    "/checkout",
    "/account",
    "/product/1",
    "/product/2",
    "/product/3",
    "/product/4",
];
const COUNTRIES: [&str; 8] = ["US", "DE", "GB", "FR", "IN", "BR", "JP", "CA"];
const DEVICES: [&str; 3] = ["desktop", "mobile", "tablet"];
const REFERRERS: [&str; 5] = ["direct", "google", "facebook", "newsletter", "partner"];
const CYCLE_MS: f64 = 600_000.0;

/// xoshiro256** seeded by SplitMix64: small, fast, reproducible.
struct Rng([u64; 4]);

impl Rng {
    fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng([next(), next(), next(), next()])
    }

    fn u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    fn f64(&mut self) -> f64 {
        (self.u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.u64() % n as u64) as usize
    }

    fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u1 = self.f64().max(1e-12);
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// Append `x` with `decimals` places (1 or 2), exactly as `{x:.1}` /
/// `{x:.2}` writes it. Rounding the scaled value agrees with `fmt`'s exact
/// decimal rounding unless the scaled value is within a hair of a half (or
/// too large for the product to be exact enough); those go through `fmt`.
fn push_fixed(line: &mut String, x: f64, decimals: u32) {
    let unit = 10u64.pow(decimals);
    let scaled = x * unit as f64;
    if x >= 0.0 && scaled < 1e8 && ((scaled - scaled.floor()) - 0.5).abs() > 1e-6 {
        let t = scaled.round() as u64;
        let mut int = itoa::Buffer::new();
        line.push_str(int.format(t / unit));
        line.push('.');
        let frac = int.format(t % unit);
        for _ in frac.len()..decimals as usize {
            line.push('0');
        }
        line.push_str(frac);
    } else {
        let _ = write!(line, "{x:.prec$}", prec = decimals as usize);
    }
}

struct Session {
    id: u64,
    user: u32,
    pages_left: u32,
    cart: bool,
    buys: bool,
}

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Events per second (event time); also the pacing rate.
    pub rate: f64,
    pub seed: u64,
    /// Event time of the first event (ms); default: now.
    pub start_ms: Option<i64>,
    /// Generate as fast as possible instead of pacing to the wall clock.
    pub unpaced: bool,
    /// Stop after this many events (bounded runs, tests).
    pub limit: Option<u64>,
    /// Input partitions: each user's events go to one, by a stable hash of
    /// the `user_id` ([`partition_of`], as `rtap-gen` places them on Kafka
    /// partitions).
    pub partitions: u32,
}

/// The partition (of `n`) of a user's events: a stable hash of the key,
/// the same for every run, the simulator and `rtap-gen`.
pub fn partition_of(key: &str, n: usize) -> usize {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    (BuildHasherDefault::<DefaultHasher>::default().hash_one(key) % n.max(1) as u64) as usize
}

pub struct Simulator {
    cfg: SimConfig,
    origin: Origin,
    rng: Rng,
    users: u32,
    sessions: Vec<Session>,
    next_session: u64,
    /// Event-time clock (ms, fractional).
    clock: f64,
    start_ms: f64,
    wall_start: Instant,
    seq: u64,
    bot: Option<(u32, u32)>,
    next_bot_ms: f64,
    line: String,
    /// The current event's `user_id` (its Kafka key).
    user_key: String,
    /// `ev-<seed in hex>-`: every `event_id` but its sequence number.
    event_id_prefix: String,
}

impl Simulator {
    pub fn new(cfg: SimConfig) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as i64;
        let start = cfg.start_ms.unwrap_or(now) as f64;
        let users = (cfg.rate * 20.0).clamp(1_000.0, 2_000_000.0) as u32;
        Simulator {
            origin: Origin {
                source: Arc::from("simulator"),
                partition: 0,
            },
            rng: Rng::new(cfg.seed),
            users,
            sessions: Vec::new(),
            next_session: 1,
            clock: start,
            start_ms: start,
            wall_start: Instant::now(),
            seq: 0,
            bot: None,
            next_bot_ms: start + 5_000.0,
            line: String::with_capacity(512),
            user_key: String::with_capacity(16),
            event_id_prefix: format!("ev-{:x}-", cfg.seed),
            cfg,
        }
    }

    /// Position in the 10-minute incident cycle, ms.
    fn phase(&self) -> f64 {
        (self.clock - self.start_ms).rem_euclid(CYCLE_MS)
    }

    fn current_rate(&self) -> f64 {
        let p = self.phase();
        if (120_000.0..480_000.0).contains(&p) {
            self.cfg.rate.min(100.0)
        } else {
            self.cfg.rate
        }
    }

    /// Generate one event as a JSON line into `self.line`.
    fn generate(&mut self) {
        self.clock += 1000.0 / self.current_rate().max(0.001);
        self.seq += 1;
        let phase = self.phase();
        let slow = (60_000.0..240_000.0).contains(&phase);
        let error_p = if (90_000.0..270_000.0).contains(&phase) {
            0.04
        } else {
            0.002
        };

        // A bot burst: 40 page views within ~5 s from one user.
        if self.bot.is_none() && self.clock >= self.next_bot_ms {
            self.bot = Some((self.rng.below(self.users as usize) as u32, 40));
            self.next_bot_ms = self.clock + 30_000.0;
        }
        let bot_turn = match self.bot {
            Some((_, left)) => {
                self.rng
                    .chance((40.0 / (5.0 * self.current_rate())).min(1.0))
                    || left == 0
            }
            None => false,
        };

        let (event_type, user, session, page, value) =
            if let (true, Some((user, left))) = (bot_turn, self.bot) {
                self.bot = if left > 1 {
                    Some((user, left - 1))
                } else {
                    None
                };
                (
                    "page_view",
                    user,
                    0,
                    PAGES[self.rng.below(PAGES.len())],
                    None,
                )
            } else {
                self.session_event(error_p)
            };

        let mut latency = (4.2 + 0.6 * self.rng.normal()).exp();
        if slow {
            latency *= 8.0;
        } else if self.rng.chance(0.002) {
            latency *= 20.0;
        }
        let mut ts = self.clock as i64;
        if self.rng.chance(0.02) {
            ts -= self.rng.below(1_500) as i64;
        } else if self.rng.chance(0.0005) {
            ts -= self.rng.below(30_000) as i64;
        }
        let u = user as usize;
        let mut int = itoa::Buffer::new();
        self.user_key.clear();
        self.user_key.push_str("user-");
        self.user_key.push_str(int.format(user));
        // Pushed piece by piece: `write!` through `fmt` was a fifth of the
        // load generator's CPU at 100 000 events/s, CPU the host under test
        // shares. The line is byte for byte what the `write!` wrote.
        let l = &mut self.line;
        l.clear();
        l.push_str(r#"{"event_id":""#);
        l.push_str(&self.event_id_prefix);
        l.push_str(int.format(self.seq));
        l.push_str(r#"","event_type":""#);
        l.push_str(event_type);
        l.push_str(r#"","user_id":""#);
        l.push_str(&self.user_key);
        l.push_str(r#"","session_id":""#);
        if session == 0 {
            l.push_str("bot-");
            l.push_str(int.format(user));
        } else {
            l.push_str("s-");
            l.push_str(int.format(session));
        }
        l.push_str(r#"","page":""#);
        l.push_str(page);
        l.push_str(r#"","timestamp":"#);
        l.push_str(int.format(ts));
        l.push_str(r#","latency_ms":"#);
        push_fixed(l, latency, 1);
        l.push_str(r#","country":""#);
        l.push_str(COUNTRIES[u % COUNTRIES.len()]);
        l.push_str(r#"","device":""#);
        l.push_str(DEVICES[(u / 8) % DEVICES.len()]);
        l.push_str(r#"","referrer":""#);
        l.push_str(REFERRERS[(u / 24) % REFERRERS.len()]);
        l.push('"');
        if let Some(v) = value {
            l.push_str(r#","value":"#);
            push_fixed(l, v, 2);
        }
        l.push('}');
    }

    /// The next event of a (new or ongoing) session.
    fn session_event(
        &mut self,
        error_p: f64,
    ) -> (&'static str, u32, u64, &'static str, Option<f64>) {
        let target_sessions = (self.current_rate() * 2.0).clamp(20.0, 50_000.0) as usize;
        if self.sessions.len() < target_sessions
            && (self.sessions.is_empty() || self.rng.chance(0.15))
        {
            let id = self.next_session;
            self.next_session += 1;
            let user = self.rng.below(self.users as usize) as u32;
            let cart = self.rng.chance(0.3);
            let s = Session {
                id,
                user,
                pages_left: 3 + self.rng.below(12) as u32,
                cart,
                buys: cart && self.rng.chance(0.4),
            };
            self.sessions.push(s);
            return ("session_start", user, id, "/", None);
        }
        let i = self.rng.below(self.sessions.len());
        let s = &mut self.sessions[i];
        let (id, user) = (s.id, s.user);
        if self.rng.chance(error_p) {
            return ("error", user, id, PAGES[self.rng.below(PAGES.len())], None);
        }
        if s.pages_left == 0 {
            let s = self.sessions.swap_remove(i);
            if s.buys {
                return (
                    "purchase",
                    user,
                    id,
                    "/checkout",
                    Some(10.0 + self.rng.f64() * 190.0),
                );
            }
            return ("session_end", user, id, "/", None);
        }
        s.pages_left -= 1;
        if s.cart && s.pages_left == 2 {
            return ("add_to_cart", user, id, PAGES[8 + self.rng.below(4)], None);
        }
        if self.rng.chance(0.25) {
            return ("click", user, id, PAGES[self.rng.below(PAGES.len())], None);
        }
        (
            "page_view",
            user,
            id,
            PAGES[self.rng.below(PAGES.len())],
            None,
        )
    }
}

impl Simulator {
    /// Generate up to `max` events whose event time the wall clock has
    /// reached (all of them, unpaced), waiting until at least one is due,
    /// and hand each to `f` as (sequence number, `user_id`, JSON line).
    /// Returns how many were generated: 0 only at the limit. `rtap-gen`
    /// produces the lines as they are, without parsing them back.
    pub fn next_lines(&mut self, max: usize, mut f: impl FnMut(u64, &str, &str)) -> usize {
        let at_limit = |s: &Self| s.cfg.limit.is_some_and(|l| s.seq >= l);
        let mut n = 0;
        loop {
            let due = if self.cfg.unpaced {
                f64::INFINITY
            } else {
                self.start_ms + self.wall_start.elapsed().as_secs_f64() * 1000.0
            };
            while n < max && !at_limit(self) && self.clock + 1000.0 / self.current_rate() <= due {
                self.generate();
                f(self.seq, &self.user_key, &self.line);
                n += 1;
            }
            if n > 0 || at_limit(self) {
                return n;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn position(&self) -> Position {
        Position {
            offset: self.seq,
            seq: self.seq,
        }
    }
}

impl Source for Simulator {
    fn name(&self) -> &str {
        "simulator"
    }

    /// With several partitions, the batch holds every event generated, in
    /// runs by partition (each partition's in order), and names the same
    /// position for every partition: all of them are generated up to it.
    fn next_batch(&mut self, max: usize) -> Result<Option<EventBatch>, SourceError> {
        let mut batch = EventBatch::new(self.origin.clone());
        let parts = self.cfg.partitions.max(1) as usize;
        if parts == 1 {
            if self.next_lines(max, |seq, _, line| {
                decode::decode_into(line.as_bytes(), seq, &mut batch)
                    .expect("the simulator writes valid events");
            }) == 0
            {
                return Ok(None);
            }
            batch.end = self.position();
            return Ok(Some(batch));
        }
        let mut held: Vec<(Vec<u64>, String)> = vec![Default::default(); parts];
        if self.next_lines(max, |seq, user, line| {
            let h = &mut held[partition_of(user, parts)];
            h.0.push(seq);
            h.1.push_str(line);
            h.1.push('\n');
        }) == 0
        {
            return Ok(None);
        }
        for (p, (seqs, lines)) in held.iter().enumerate() {
            if seqs.is_empty() {
                continue;
            }
            batch.enter_partition(p as i32);
            for (seq, line) in seqs.iter().zip(lines.lines()) {
                decode::decode_into(line.as_bytes(), *seq, &mut batch)
                    .expect("the simulator writes valid events");
            }
        }
        batch.end = self.position();
        batch.ends = (0..parts as i32).map(|p| (p, batch.end)).collect();
        Ok(Some(batch))
    }

    fn seek(&mut self, positions: &[(i32, Position)]) -> Result<(), SourceError> {
        // Every partition is generated up to the same position.
        let Some(pos) = positions.iter().map(|(_, p)| *p).max_by_key(|p| p.seq) else {
            return Ok(());
        };
        // Replaying the generator reproduces the same stream (same seed).
        let mut fresh = Simulator::new(self.cfg.clone());
        fresh.start_ms = self.start_ms;
        fresh.clock = self.start_ms;
        while fresh.seq < pos.seq {
            fresh.generate();
        }
        *self = fresh;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim(seed: u64) -> Simulator {
        Simulator::new(SimConfig {
            rate: 1000.0,
            seed,
            start_ms: Some(1_700_000_000_000),
            unpaced: true,
            limit: Some(20_000),
            partitions: 1,
        })
    }

    fn collect(mut s: Simulator) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(b) = s.next_batch(1000).unwrap() {
            out.extend(b.events.iter().map(|e| b.raw(e).to_string()));
        }
        out
    }

    #[test]
    fn deterministic_with_a_seed() {
        assert_eq!(collect(sim(42)), collect(sim(42)));
        assert_ne!(collect(sim(42))[..100], collect(sim(43))[..100]);
    }

    #[test]
    fn funnel_and_incidents_present() {
        let lines = collect(sim(1));
        assert_eq!(lines.len(), 20_000);
        for t in [
            "session_start",
            "page_view",
            "click",
            "add_to_cart",
            "purchase",
            "session_end",
            "error",
        ] {
            assert!(
                lines
                    .iter()
                    .any(|l| l.contains(&format!("\"event_type\":\"{t}\""))),
                "no {t}"
            );
        }
        assert!(
            lines.iter().any(|l| l.contains("\"session_id\":\"bot-")),
            "no bot burst"
        );
    }

    #[test]
    fn fixed_point_is_what_fmt_writes() {
        let mut rng = Rng::new(9);
        let mut xs = vec![
            0.0,
            0.05,
            0.25,
            0.35,
            0.45,
            1.005,
            2.675,
            9.95,
            9.995,
            99.95,
            1e7,
            1e9,
            0.049_999_999,
        ];
        for _ in 0..200_000 {
            xs.push((4.2 + 0.6 * rng.normal()).exp() * [1.0, 8.0, 20.0][rng.below(3)]);
            xs.push(10.0 + rng.f64() * 190.0);
            // Exact halves at both scales, and their neighbours.
            let h = rng.below(100_000) as f64 + 0.5;
            xs.extend([
                h / 10.0,
                h / 100.0,
                f64::from_bits((h / 10.0).to_bits() + 1),
            ]);
        }
        for x in xs {
            for d in [1, 2] {
                let mut got = String::new();
                push_fixed(&mut got, x, d);
                assert_eq!(
                    got,
                    format!("{x:.prec$}", prec = d as usize),
                    "{x:e} with {d} places"
                );
            }
        }
    }

    #[test]
    fn resumes_from_a_position() {
        let all = collect(sim(5));
        let mut s = sim(5);
        s.seek(&[(
            0,
            Position {
                offset: 12_345,
                seq: 12_345,
            },
        )])
        .unwrap();
        assert_eq!(collect(s), all[12_345..]);
    }
}
