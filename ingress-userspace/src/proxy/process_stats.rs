//! The proxy process's CPU time, memory, start time and storage I/O, read from `/proc` at
//! scrape time, for the `nginx_process_*` series ingress-nginx's dashboards chart.
use std::fs;

/// One reading of the process's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessStats {
    /// User and system CPU time.
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    /// Seconds since the Unix epoch.
    pub start_time: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
}

impl ProcessStats {
    /// This process's figures; `None` where `/proc` cannot be read or parsed.
    pub fn of_self() -> Option<Self> {
        let stat = fs::read_to_string("/proc/self/stat").ok()?;
        let boot = fs::read_to_string("/proc/stat").ok()?;
        // Storage I/O is the one figure a restricted `/proc` may hide: zero then.
        let io = fs::read_to_string("/proc/self/io").unwrap_or_default();
        let ticks = rustix::param::clock_ticks_per_second();
        let page = rustix::param::page_size() as u64;
        if ticks == 0 || page == 0 {
            return None;
        }
        parse(&stat, &boot, &io, ticks, page)
    }
}

/// The fields of a `/proc/PID/stat` line.
#[derive(Clone, Debug)]
pub struct StatLine<'a> {
    comm: &'a str,
    /// From field 3 (the state) on.
    fields: Vec<&'a str>,
}

impl<'a> StatLine<'a> {
    /// Splits `text`; `None` without the command name's parentheses.
    pub fn parse(text: &'a str) -> Option<Self> {
        // The command name may hold spaces and parentheses: it runs from the first '(' to
        // the last ')', and the other fields follow.
        let (head, rest) = text.rsplit_once(')')?;
        let (_, comm) = head.split_once('(')?;
        Some(StatLine {
            comm,
            fields: rest.split_whitespace().collect(),
        })
    }

    /// The command name (field 2, without its parentheses).
    pub fn comm(&self) -> &'a str {
        self.comm
    }

    /// Field `n` as numbered in proc(5) (3 and up), parsed.
    pub fn field<T: std::str::FromStr>(&self, n: usize) -> Option<T> {
        self.fields.get(n.checked_sub(3)?)?.parse().ok()
    }
}

/// The figures from the text of `/proc/self/stat`, `/proc/stat` and `/proc/self/io`.
fn parse(stat: &str, boot: &str, io: &str, ticks: u64, page: u64) -> Option<ProcessStats> {
    let stat = StatLine::parse(stat)?;
    let field = |n: usize| stat.field::<u64>(n);
    let (utime, stime) = (field(14)?, field(15)?);
    let started_ticks = field(22)?;
    let btime: u64 = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let io_field = |name: &str| -> u64 {
        io.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    Some(ProcessStats {
        cpu_seconds: (utime + stime) as f64 / ticks as f64,
        resident_bytes: field(24)?.saturating_mul(page),
        virtual_bytes: field(23)?,
        start_time: btime + started_ticks / ticks,
        read_bytes: io_field("read_bytes:"),
        write_bytes: io_field("write_bytes:"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_text_including_a_command_with_spaces_and_parentheses() {
        let stat = "4242 (ingress d) (x)) S 1 4242 4242 0 -1 4194560 5000 0 0 0 \
                    250 150 0 0 20 0 9 0 30000 734003200 2048 18446744073709551615";
        let boot = "cpu  1 2 3\nbtime 1764300000\nprocesses 99\n";
        let io = "rchar: 10\nwchar: 20\nread_bytes: 4096\nwrite_bytes: 8192\n";
        assert_eq!(
            StatLine::parse(stat).map(|s| s.comm()),
            Some("ingress d) (x)")
        );
        let p = parse(stat, boot, io, 100, 4096).expect("parses");
        assert_eq!(p.cpu_seconds, 4.0);
        assert_eq!(p.resident_bytes, 2048 * 4096);
        assert_eq!(p.virtual_bytes, 734_003_200);
        assert_eq!(p.start_time, 1_764_300_000 + 300);
        assert_eq!((p.read_bytes, p.write_bytes), (4096, 8192));
        // A hidden `io` costs only the I/O figures; a truncated `stat` gives nothing.
        assert_eq!(
            parse(stat, boot, "", 100, 4096).map(|p| p.read_bytes),
            Some(0)
        );
        assert_eq!(parse("4242 (ingressd) S 1 2", boot, io, 100, 4096), None);
        assert_eq!(parse(stat, "cpu 1 2 3\n", io, 100, 4096), None);
    }

    #[test]
    fn reads_this_process() {
        let p = ProcessStats::of_self().expect("/proc is mounted here");
        assert!(p.resident_bytes > 1 << 20, "{p:?}");
        assert!(p.virtual_bytes >= p.resident_bytes, "{p:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        // Started within the last day, and not in the future (btime is rounded to seconds).
        assert!(
            p.start_time <= now + 1 && p.start_time + 86_400 > now,
            "{p:?}"
        );
    }
}
