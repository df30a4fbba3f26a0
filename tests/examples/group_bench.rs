//! Groups under load (docs/BENCHMARKS.md "Groups"): messages into one
//! group of `--members` (1,024) members, all connected, alongside a
//! one-to-one load of `--pairs` senders at `--pair-rate` messages/s each;
//! the one-to-one load alone, then both, alternating `--rounds` times.
//! Prints per phase the group's deliveries/s and the time from send to its
//! last member (p50, p99), the one-to-one send-to-delivery p50/p99, the
//! host's steal time and load average over the phase (from /proc), and at
//! the end the one-to-one p99 of all phases alone and with the group
//! (their ratio).
//!
//! ```sh
//! cargo run --release -p wa-tests --example group_bench -- --secs 10 --group-rate 2 --rounds 3
//! ```
//!
//! wa-chat runs in this process (its `run()` on port 0, as the tests start
//! it), the clients too, on the same cores. wa-store runs in this process
//! as well, unless `--store-toml TEXT` is given: then it is a child process
//! (the `wa-store` binary beside this example's directory) with TEXT added
//! to its config, so that its tasks do not share a runtime with the 1,124
//! clients', e.g. `--store-toml $'[groups]\nturn = "1ms"'`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::client::{Client, Event, Events, Transport};
use tokio::time::Instant;

struct Args {
    members: usize,
    group_rate: u64,
    pairs: usize,
    pair_rate: u64,
    secs: u64,
    rounds: u64,
    /// Extra wa-store config; `Some` runs wa-store as a child process.
    store_toml: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        members: 1024,
        group_rate: 20,
        pairs: 50,
        pair_rate: 20,
        secs: 10,
        rounds: 2,
        store_toml: None,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for w in argv.chunks(2) {
        let v = || w[1].parse::<u64>().expect("a number");
        match w[0].as_str() {
            "--members" => a.members = v() as usize,
            "--group-rate" => a.group_rate = v(),
            "--pairs" => a.pairs = v() as usize,
            "--pair-rate" => a.pair_rate = v(),
            "--secs" => a.secs = v(),
            "--rounds" => a.rounds = v(),
            "--store-toml" => a.store_toml = Some(w[1].clone()),
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// Send times travel in the body: microseconds since `base`, then an index.
fn stamp(base: Instant, idx: u64) -> Bytes {
    let mut b = Vec::with_capacity(16);
    b.extend_from_slice(&(base.elapsed().as_micros() as u64).to_be_bytes());
    b.extend_from_slice(&idx.to_be_bytes());
    Bytes::from(b)
}

fn unstamp(base: Instant, body: &[u8]) -> Option<(u64, u64)> {
    let sent = u64::from_be_bytes(body.get(..8)?.try_into().ok()?);
    let idx = u64::from_be_bytes(body.get(8..16)?.try_into().ok()?);
    let now = base.elapsed().as_micros() as u64;
    Some((idx, now.saturating_sub(sent)))
}

#[derive(Default)]
struct Tally {
    /// One-to-one latencies (µs) of the current phase.
    direct: Vec<u64>,
    /// Per group message: members that have it, and the latest arrival (µs).
    group: HashMap<u64, (usize, u64)>,
    /// Group deliveries, all members together.
    deliveries: u64,
    /// Group events received (the setup's).
    events: usize,
    /// Requests the clients were told to resend (GROUP_BUSY, say).
    retried: u64,
}

/// The host's CPU time (all CPUs, in ticks) and the part of it stolen by
/// the hypervisor, from /proc/stat; and the 1-minute load average.
fn cpu() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|x| x.parse().ok())
        .collect();
    (f.iter().sum(), f.get(7).copied().unwrap_or(0))
}

fn load1() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_owned()
}

/// Steal as a share of the CPU time between two [`cpu`] readings, in %.
fn steal(a: (u64, u64), b: (u64, u64)) -> f64 {
    let total = b.0.saturating_sub(a.0).max(1);
    100.0 * b.1.saturating_sub(a.1) as f64 / total as f64
}

/// Receives as one user until the process ends: records, acknowledges.
fn receive(client: Arc<Client>, mut events: Events, base: Instant, tally: Arc<Mutex<Tally>>) {
    tokio::spawn(async move {
        while let Some(e) = events.next().await {
            let (seq, rec) = match e {
                Event::GroupMessage { seq, body, .. } => {
                    (seq, unstamp(base, &body).map(|x| (true, x)))
                }
                Event::Message { seq, body, .. } => (seq, unstamp(base, &body).map(|x| (false, x))),
                Event::GroupEvent { seq, .. } => {
                    tally.lock().unwrap().events += 1;
                    (seq, None)
                }
                Event::Receipt { seq, .. } | Event::GroupReceipts { seq, .. } => (seq, None),
                Event::Retrying { .. } => {
                    tally.lock().unwrap().retried += 1;
                    continue;
                }
                _ => continue,
            };
            if let Some((group, (idx, lat))) = rec {
                let mut t = tally.lock().unwrap();
                if group {
                    t.deliveries += 1;
                    let e = t.group.entry(idx).or_default();
                    e.0 += 1;
                    e.1 = e.1.max(lat);
                } else {
                    t.direct.push(lat);
                }
            }
            let _ = client.ack(&[seq]).await;
        }
    });
}

fn pct(v: &mut [u64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i] as f64 / 1000.0
}

async fn connect(d: &support::Deployment, user: &str) -> (Arc<Client>, Events) {
    let mut cfg = d.client_config(user, Transport::Tcp);
    cfg.max_pending = 100_000;
    let (c, e) = Client::connect(cfg).await.expect("connects");
    (Arc::new(c), e)
}

/// [`load`] and, from `group`'s sender at its rate, messages to it
/// (numbered from `next` on): how many were sent.
async fn load_group(
    senders: &[(Arc<Client>, String)],
    rate: u64,
    group: (&Arc<Client>, &str, u64, &mut u64),
    secs: u64,
    base: Instant,
) -> u64 {
    let (c, g, r, next) = group;
    let pairs = load(senders, rate, secs, base);
    let end = Instant::now() + Duration::from_secs(secs);
    let group = async {
        let first = *next;
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / r));
        while Instant::now() < end {
            tick.tick().await;
            c.send_group(g, stamp(base, *next))
                .await
                .expect("group send");
            *next += 1;
        }
        *next - first
    };
    let ((), sent) = tokio::join!(pairs, group);
    sent
}

/// Sends from each of `senders` at `rate`/s for `secs`.
async fn load(senders: &[(Arc<Client>, String)], rate: u64, secs: u64, base: Instant) {
    let end = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for (i, (c, to)) in senders.iter().enumerate() {
        let (c, to) = (Arc::clone(c), to.clone());
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
            let mut n = 0;
            while Instant::now() < end {
                tick.tick().await;
                let _ = c.send(&to, stamp(base, (i as u64) << 32 | n)).await;
                n += 1;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let a = args();
    let d = match &a.store_toml {
        Some(extra) => support::Deployment::start_with_store_config(extra, |_| {}).await,
        None => support::Deployment::start().await,
    };
    let base = Instant::now();
    let tally = Arc::new(Mutex::new(Tally::default()));

    // The group: its sender, and every member connected.
    let (alice, mut alice_events) = connect(&d, "gsender").await;
    let names: Vec<String> = (1..a.members).map(|i| format!("gm{i}")).collect();
    for n in &names {
        let (c, e) = connect(&d, n).await;
        receive(c, e, base, Arc::clone(&tally));
    }
    let (_, group) = alice.create_group("gsender", "bench", &[]).await.unwrap();
    for chunk in names.chunks(256) {
        let ms: Vec<&str> = chunk.iter().map(String::as_str).collect();
        alice.add_members(&group, &ms).await.unwrap();
    }
    let mut answers = 0;
    while answers < 1 + names.len().div_ceil(256) {
        match alice_events.next().await.expect("events") {
            Event::GroupResult { .. } => answers += 1,
            Event::Rejected { code, message, .. } => panic!("{code}: {message}"),
            _ => {}
        }
    }
    receive(Arc::clone(&alice), alice_events, base, Arc::clone(&tally));
    let setup = Instant::now();
    while tally.lock().unwrap().events < names.len() {
        assert!(
            setup.elapsed() < Duration::from_secs(120),
            "setup fan-out too slow"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The one-to-one pairs.
    let mut senders = Vec::new();
    for i in 0..a.pairs {
        let (s, se) = connect(&d, &format!("ps{i}")).await;
        receive(Arc::clone(&s), se, base, Arc::clone(&tally));
        let (r, re) = connect(&d, &format!("pr{i}")).await;
        receive(r, re, base, Arc::clone(&tally));
        senders.push((s, format!("pr{i}")));
    }

    let settle = || tokio::time::sleep(Duration::from_secs(2));
    println!(
        "members {} group_rate {}/s pairs {} x {}/s secs {} rounds {} store {}",
        a.members,
        a.group_rate,
        a.pairs,
        a.pair_rate,
        a.secs,
        a.rounds,
        a.store_toml
            .as_deref()
            .map_or("in this process".to_string(), |t| format!(
                "a process, {t:?}"
            )),
    );
    let (mut all_alone, mut all_with) = (Vec::new(), Vec::new());
    let mut next = 0u64;
    for round in 1..=a.rounds {
        let c0 = cpu();
        load(&senders, a.pair_rate, a.secs, base).await;
        settle().await;
        let (c1, l1) = (cpu(), load1());
        let mut alone = std::mem::take(&mut tally.lock().unwrap().direct);
        println!(
            "round {round} alone: 1:1 {} msgs p50 {:.1} ms p99 {:.1} ms; steal {:.1} %, load {l1}",
            alone.len(),
            pct(&mut alone, 0.50),
            pct(&mut alone, 0.99),
            steal(c0, c1),
        );
        all_alone.extend(alone);

        {
            let mut t = tally.lock().unwrap();
            t.deliveries = 0;
            t.group.clear();
            t.retried = 0;
        }
        let c0 = cpu();
        let t0 = Instant::now();
        let first = next;
        let sent = load_group(
            &senders,
            a.pair_rate,
            (&alice, &group, a.group_rate, &mut next),
            a.secs,
            base,
        )
        .await;
        let until_done = Instant::now();
        loop {
            let done = tally
                .lock()
                .unwrap()
                .group
                .iter()
                .filter(|(i, e)| **i >= first && e.0 == a.members)
                .count() as u64;
            if done >= sent || until_done.elapsed() > Duration::from_secs(60) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let elapsed = t0.elapsed().as_secs_f64();
        let (c1, l1) = (cpu(), load1());
        let t = std::mem::take(&mut *tally.lock().unwrap());
        tally.lock().unwrap().events = t.events;
        let mut with = t.direct;
        let mut last: Vec<u64> = t
            .group
            .values()
            .filter(|e| e.0 == a.members)
            .map(|e| e.1)
            .collect();
        println!(
            "round {round} with the group: sent {sent}, reached every member {}, deliveries {} ({:.0}/s over {elapsed:.1} s), to last member p50 {:.1} ms p99 {:.1} ms, resends asked {}; 1:1 {} msgs p50 {:.1} ms p99 {:.1} ms; steal {:.1} %, load {l1}",
            last.len(),
            t.deliveries,
            t.deliveries as f64 / elapsed,
            pct(&mut last, 0.50),
            pct(&mut last, 0.99),
            t.retried,
            with.len(),
            pct(&mut with, 0.50),
            pct(&mut with, 0.99),
            steal(c0, c1),
        );
        all_with.extend(with);
        settle().await;
    }
    let (a50, a99) = (pct(&mut all_alone, 0.50), pct(&mut all_alone, 0.99));
    let (w50, w99) = (pct(&mut all_with, 0.50), pct(&mut all_with, 0.99));
    println!(
        "one-to-one, all rounds: alone {} msgs p50 {a50:.1} ms p99 {a99:.1} ms; with the group {} msgs p50 {w50:.1} ms p99 {w99:.1} ms; p99 ratio {:.2}",
        all_alone.len(),
        all_with.len(),
        w99 / a99
    );
    d.stop().await;
}
