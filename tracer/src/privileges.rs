//! Checking the capabilities tracing needs before anything loads.
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYSLOG: u32 = 34;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

fn effective() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Names of the capabilities in `caps` that are missing from `have`.
pub fn missing_from(have: u64) -> Vec<&'static str> {
    let has = |c: u32| have & (1u64 << c) != 0;
    let mut missing = Vec::new();
    if !has(CAP_SYS_ADMIN) {
        if !has(CAP_BPF) {
            missing.push("CAP_BPF");
        }
        if !has(CAP_PERFMON) {
            missing.push("CAP_PERFMON");
        }
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if !has(CAP_SYSLOG) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_SYSLOG");
    }
    missing
}

/// The capabilities tracing needs and this process lacks.
#[derive(Debug, thiserror::Error)]
#[error("pathtrace needs {} (run it with sudo, or grant them with setcap)", .0.join(", "))]
pub struct MissingCapabilities(pub Vec<&'static str>);

/// `Err` naming what is missing.
pub fn check() -> Result<(), MissingCapabilities> {
    let missing = missing_from(effective());
    if missing.is_empty() {
        return Ok(());
    }
    Err(MissingCapabilities(missing))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_needs_nothing_and_nobody_needs_everything() {
        assert!(missing_from(u64::MAX).is_empty());
        assert_eq!(
            missing_from(0),
            ["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN", "CAP_SYSLOG"]
        );
        let minimal =
            (1 << CAP_BPF) | (1 << CAP_PERFMON) | (1 << CAP_NET_ADMIN) | (1 << CAP_SYSLOG);
        assert!(missing_from(minimal).is_empty());
    }
}
