//! Parsing `h2load` output (nghttp2's HTTP/2 load generator) and its per-request log.

use super::stats::percentile;

/// What one `h2load` run reported.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct H2Report {
    /// Requests that got a response.
    pub succeeded: u64,
    /// Requests that failed, errored or timed out.
    pub failed: u64,
    /// Responses that were not 2xx or 3xx.
    pub non_2xx_3xx: u64,
    pub requests_per_sec: f64,
    /// The protocol ALPN chose (`h2` expected).
    pub protocol: String,
}

/// Parses h2load's summary.
pub fn parse(out: &str) -> Result<H2Report, String> {
    let mut r = H2Report::default();
    let (mut saw_rps, mut saw_requests, mut saw_status) = (false, false, false);
    for line in out.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["finished", "in", _, rps, "req/s,", ..] => {
                r.requests_per_sec = rps.parse().map_err(|_| format!("bad line {line:?}"))?;
                saw_rps = true;
            }
            ["requests:", rest @ ..] => {
                // 100 total, 100 started, 100 done, 98 succeeded, 2 failed, 0 errored, 0 timeout
                let count = |what: &str| -> Result<u64, String> {
                    rest.windows(2)
                        .find(|w| w[1].trim_end_matches(',') == what)
                        .and_then(|w| w[0].parse().ok())
                        .ok_or_else(|| format!("no {what:?} count in {line:?}"))
                };
                r.succeeded = count("succeeded")?;
                r.failed = count("failed")? + count("errored")? + count("timeout")?;
                saw_requests = true;
            }
            ["status", "codes:", rest @ ..] => {
                // 98 2xx, 0 3xx, 0 4xx, 0 5xx
                for w in rest.windows(2) {
                    if matches!(w[1].trim_end_matches(','), "4xx" | "5xx") {
                        r.non_2xx_3xx += w[0]
                            .parse::<u64>()
                            .map_err(|_| format!("bad line {line:?}"))?;
                    }
                }
                saw_status = true;
            }
            ["Application", "protocol:", p] => r.protocol = (*p).to_string(),
            _ => {}
        }
    }
    if !(saw_rps && saw_requests && saw_status) {
        return Err(format!("incomplete h2load output:\n{out}"));
    }
    Ok(r)
}

/// p50 and p99 request times, µs, from h2load's `--log-file` (tab-separated: start time,
/// status, µs to the end of the response).
pub fn latencies(log: &str) -> Result<(u32, u32), String> {
    let mut v: Vec<u32> = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let us = line
            .split('\t')
            .nth(2)
            .and_then(|f| f.trim().parse().ok())
            .ok_or_else(|| format!("bad log line {line:?}"))?;
        v.push(us);
    }
    if v.is_empty() {
        return Err("empty h2load log".into());
    }
    v.sort_unstable();
    Ok((percentile(&v, 50.0), percentile(&v, 99.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "starting benchmark...
spawning thread #0: 64 total client(s). Timing-based test with 0s of warm-up time and 5s of main duration for measurements.
Application protocol: h2
Main benchmark duration is over for thread #0. Stopping all clients.
Stopped all clients for thread #0

finished in 5.00s, 32610.23 req/s, 1.22MB/s
requests: 163051 total, 163691 started, 163051 done, 163040 succeeded, 11 failed, 2 errored, 1 timeout
status codes: 163030 2xx, 0 3xx, 4 4xx, 6 5xx
traffic: 6.10MB (6394508) total, 1.25MB (1311988) headers (space savings 90.03%), 2.07MB (2170000) data
                     min         max         mean         sd        +/- sd
time for request:      990us     91.55ms     22.84ms      8.86ms    88.79%
";

    #[test]
    fn parses_h2load_output() {
        let r = parse(OUT).unwrap();
        assert_eq!(r.succeeded, 163_040);
        assert_eq!(r.failed, 14);
        assert_eq!(r.non_2xx_3xx, 10);
        assert_eq!(r.requests_per_sec, 32610.23);
        assert_eq!(r.protocol, "h2");
        assert!(parse("connect to 127.0.0.1 failed").is_err());
        assert!(parse(&OUT.replace("163040 succeeded", "x succeeded")).is_err());
    }

    #[test]
    fn latencies_from_the_log() {
        let log: String = (1..=100)
            .map(|i| format!("1700000000{i:06}\t200\t{}\n", i * 10))
            .collect();
        assert_eq!(latencies(&log), Ok((500, 990)));
        assert!(latencies("").is_err());
        assert!(latencies("1\t200\tslow\n").is_err());
    }
}
