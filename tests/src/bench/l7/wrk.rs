//! Parsing `wrk --latency` output.

/// What one `wrk` run reported.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WrkReport {
    pub requests: u64,
    pub requests_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// `Socket errors: connect, read, write, timeout`.
    pub socket_errors: [u64; 4],
    /// `Non-2xx or 3xx responses`.
    pub non_2xx_3xx: u64,
}

impl WrkReport {
    /// Any error wrk counted.
    pub fn errors(&self) -> u64 {
        self.socket_errors.iter().sum::<u64>() + self.non_2xx_3xx
    }
}

/// A wrk duration (`812.00us`, `1.20ms`, `2.00s`, `1.00m`) in microseconds.
pub fn parse_time_us(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => return None,
    };
    Some(n * scale)
}

/// Parses the output of `wrk --latency`.
pub fn parse(out: &str) -> Result<WrkReport, String> {
    let mut r = WrkReport::default();
    let (mut saw_rps, mut saw_requests, mut saw_p50, mut saw_p99) = (false, false, false, false);
    for line in out.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", t] => {
                r.p50_us = parse_time_us(t).ok_or_else(|| format!("bad latency line {line:?}"))?;
                saw_p50 = true;
            }
            ["99%", t] => {
                r.p99_us = parse_time_us(t).ok_or_else(|| format!("bad latency line {line:?}"))?;
                saw_p99 = true;
            }
            [n, "requests", "in", ..] => {
                r.requests = n.parse().map_err(|_| format!("bad line {line:?}"))?;
                saw_requests = true;
            }
            ["Requests/sec:", n] => {
                r.requests_per_sec = n.parse().map_err(|_| format!("bad line {line:?}"))?;
                saw_rps = true;
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => {
                r.non_2xx_3xx = n.parse().map_err(|_| format!("bad line {line:?}"))?;
            }
            ["Socket", "errors:", rest @ ..] => {
                // connect 0, read 0, write 0, timeout 0
                let nums: Vec<u64> = rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse().ok())
                    .collect();
                if nums.len() != 4 {
                    return Err(format!("bad line {line:?}"));
                }
                r.socket_errors.copy_from_slice(&nums);
            }
            _ => {}
        }
    }
    if !(saw_rps && saw_requests && saw_p50 && saw_p99) {
        return Err(format!("incomplete wrk output:\n{out}"));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "Running 5s test @ https://bench.test:18443/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.05ms  200.00us   5.00ms   90.00%
    Req/Sec    60.00k     2.00k   65.00k    80.00%
  Latency Distribution
     50%  812.00us
     75%    1.10ms
     90%    1.20ms
     99%    2.50ms
  300123 requests in 5.00s, 40.00MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 10
Requests/sec:  60024.60
Transfer/sec:      8.00MB
";

    #[test]
    fn parses_wrk_output() {
        let r = parse(OUT).unwrap();
        assert_eq!(r.requests, 300_123);
        assert_eq!(r.requests_per_sec, 60024.60);
        assert_eq!(r.p50_us, 812.0);
        assert_eq!(r.p99_us, 2500.0);
        assert_eq!(r.socket_errors, [0, 3, 0, 2]);
        assert_eq!(r.non_2xx_3xx, 10);
        assert_eq!(r.errors(), 15);
    }

    #[test]
    fn clean_run_and_bad_input() {
        let clean: String = OUT
            .lines()
            .filter(|l| !l.contains("errors") && !l.contains("Non-2xx"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(parse(&clean).unwrap().errors(), 0);
        assert!(parse("unable to connect to bench.test:1 Connection refused").is_err());
        assert!(parse(&OUT.replace("812.00us", "812.00zz")).is_err());
        assert_eq!(parse_time_us("2.00s"), Some(2e6));
        assert_eq!(parse_time_us("1.5m"), Some(90e6));
        assert_eq!(parse_time_us("12"), None);
    }
}
