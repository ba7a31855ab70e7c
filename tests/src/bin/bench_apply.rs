//! Time to compile a large route table into the proxy: unchanged (every target reused, as an
//! endpoint change in a large cluster is) and from scratch (every target new). One thread, no
//! proxy, no traffic: `RouteTable::compile` alone, medians over `--rounds`.
//!
//! `target/release/bench_apply --hosts 10000 --rounds 41`
use std::{net::SocketAddr, time::Instant};

use clap::Parser as _;
use ingress::proxy::{
    metrics::ProxyMetrics,
    router::{CompileContext, RouteTable},
    upstream::pool::{KeepAliveLimits, PoolSettings},
};
use tests::l7::{prefix, snapshot, target, upstream, vhost};

#[derive(clap::Parser)]
struct Args {
    /// Hosts in the table, each with two path rules of its own.
    #[arg(long, default_value_t = 10_000)]
    hosts: usize,
    /// Compiles of each kind.
    #[arg(long, default_value_t = 41)]
    rounds: usize,
}

fn table(hosts: usize, generation: usize) -> anyhow::Result<ingress::snapshot::HttpConfig> {
    let addr: SocketAddr = "127.0.0.1:9".parse()?;
    let hosts = (0..hosts)
        .map(|i| {
            let root = target(&format!("ing{i}"), upstream(&format!("svc{i}"), &[addr]));
            let other = target(&format!("ing{i}"), upstream(&format!("svc{i}"), &[addr]));
            let path = format!("/p{generation}");
            vhost(
                &format!("h{i}.example.com"),
                vec![prefix("/", &root), prefix(&path, &other)],
            )
        })
        .collect();
    Ok(snapshot(hosts).http)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let metrics = ProxyMetrics::default();
    let pool = PoolSettings::new(KeepAliveLimits::default());
    let ctx = CompileContext {
        metrics: &metrics,
        pool: &pool,
        tls_base: None,
        tls_versions: Default::default(),
        reuse_handshakes: false,
    };
    let first = table(args.hosts, 0)?;
    let mut previous = RouteTable::compile(&first, &RouteTable::default(), &ctx);
    let (mut same, mut scratch) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        let t = Instant::now();
        let again = RouteTable::compile(&first, &previous, &ctx);
        same.push(t.elapsed().as_secs_f64() * 1e3);
        metrics.prune(&again);
        drop(std::mem::replace(&mut previous, again));
        let fresh = table(args.hosts, round + 1)?;
        let t = Instant::now();
        let other = RouteTable::compile(&fresh, &previous, &ctx);
        scratch.push(t.elapsed().as_secs_f64() * 1e3);
        drop(other);
        metrics.prune(&previous);
    }
    println!(
        "{} hosts, {} path rules: unchanged {:.1} ms, from scratch {:.1} ms (medians of {})",
        args.hosts,
        2 * args.hosts,
        median(same),
        median(scratch),
        args.rounds
    );
    Ok(())
}
