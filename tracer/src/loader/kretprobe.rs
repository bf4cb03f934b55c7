//! A kretprobe on `nf_hook_slow` with enough return instances for nested
//! and concurrent calls, made through tracefs (`r64:`), where the perf kprobe
//! PMU that aya uses can't ask for them.
//!
//! Without `CONFIG_PREEMPTION` (Debian 11's 5.10 is `PREEMPT_VOLUNTARY`)
//! `register_kretprobe()` keeps `num_possible_cpus()` instances; with it,
//! max(10, 2 × CPUs). br_netfilter nests the IPv4 hooks' `nf_hook_slow` in
//! the bridge hook's, so on such a kernel with few CPUs the nested return is
//! missed. The event lives in group `pathtrace_PID_START`; it is deleted when the
//! probe is dropped, and a later run deletes those of pids that are gone
//! (after SIGKILL). An event with no program attached costs nothing.
use std::{
    fs::OpenOptions,
    io::Write,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
};

use crate::kernel::owner::{Owner, TagKind};

/// Return instances asked for: the kernel's cap is 4096; 64 covers deep
/// nesting on every CPU of common hosts.
const MAXACTIVE: u32 = 64;
const EVENT: &str = "nf_hook_slow_ret";

#[derive(Debug, thiserror::Error)]
pub enum KretprobeError {
    #[error("tracefs is not mounted (no kprobe_events under /sys/kernel/tracing or /sys/kernel/debug/tracing)")]
    NoTracefs,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{call}: {source}")]
    Syscall {
        call: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Whether the running kernel is preemptible (`uname -v` says PREEMPT),
/// where the kernel's own instance count suffices.
pub fn kernel_is_preemptible() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/version").is_ok_and(|v| v.contains("PREEMPT"))
}

fn tracefs() -> Result<PathBuf, KretprobeError> {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.join("kprobe_events").exists())
        .ok_or(KretprobeError::NoTracefs)
}

fn append(path: &Path, line: &str) -> Result<(), KretprobeError> {
    OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .map_err(|source| KretprobeError::Io {
            path: path.to_owned(),
            source,
        })
}

/// The groups of runs that are gone, from `kprobe_events` lines such as
/// `r64:pathtrace_123_4567/nf_hook_slow_ret nf_hook_slow`.
pub fn stale_groups(kprobe_events: &str, alive: impl Fn(Owner) -> bool) -> Vec<String> {
    let mut groups: Vec<String> = kprobe_events
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.split_once(':'))
        .filter_map(|(_, name)| name.split_once('/').map(|(g, _)| g))
        .filter(|g| TagKind::TracefsGroup.parse(g).is_some_and(|o| !alive(o)))
        .map(str::to_owned)
        .collect();
    groups.dedup();
    groups
}

/// The tracefs kretprobe, with the program attached while this lives.
#[derive(Debug)]
pub struct Kretprobe {
    perf: Option<OwnedFd>,
    events: PathBuf,
    group: String,
}

impl Kretprobe {
    /// Creates the event and attaches the loaded kprobe program `prog`.
    pub fn attach(prog: impl AsFd, function: &str) -> Result<Self, KretprobeError> {
        let root = tracefs()?;
        let events = root.join("kprobe_events");
        if let Ok(text) = std::fs::read_to_string(&events) {
            for g in stale_groups(&text, Owner::alive) {
                let _ = append(&events, &format!("-:{g}/{EVENT}\n"));
            }
        }
        let group = TagKind::TracefsGroup.tag(Owner::current());
        append(
            &events,
            &format!("r{MAXACTIVE}:{group}/{EVENT} {function}\n"),
        )?;
        let mut probe = Self {
            perf: None,
            events,
            group,
        };
        let id_path = root
            .join("events")
            .join(&probe.group)
            .join(EVENT)
            .join("id");
        let id: u64 = std::fs::read_to_string(&id_path)
            .map_err(|source| KretprobeError::Io {
                path: id_path.clone(),
                source,
            })?
            .trim()
            .parse()
            .map_err(|_| KretprobeError::Io {
                path: id_path,
                source: std::io::Error::other("not a tracepoint id"),
            })?;
        use perf_event_open_sys::{bindings, ioctls, perf_event_open};
        let mut attr = bindings::perf_event_attr {
            type_: bindings::PERF_TYPE_TRACEPOINT,
            size: std::mem::size_of::<bindings::perf_event_attr>() as u32,
            config: id,
            sample_type: u64::from(bindings::PERF_SAMPLE_RAW),
            ..Default::default()
        };
        attr.__bindgen_anon_1.sample_period = 1;
        attr.__bindgen_anon_2.wakeup_events = 1;
        // A BPF program on a trace event runs on every CPU: one event, CPU 0.
        // SAFETY: attr is initialised and outlives the call; the result is checked.
        let fd = unsafe {
            perf_event_open(
                &mut attr,
                -1,
                0,
                -1,
                libc::c_ulong::from(bindings::PERF_FLAG_FD_CLOEXEC),
            )
        };
        if fd < 0 {
            return Err(KretprobeError::Syscall {
                call: "perf_event_open",
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: the kernel just returned this descriptor, owned by nobody else.
        let perf = unsafe { OwnedFd::from_raw_fd(fd) };
        let prog_fd = prog.as_fd().as_raw_fd() as u32;
        // SAFETY: both ioctls take an integer argument on a perf event fd.
        if unsafe { ioctls::SET_BPF(perf.as_raw_fd(), prog_fd) } < 0 {
            return Err(KretprobeError::Syscall {
                call: "PERF_EVENT_IOC_SET_BPF",
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: as above.
        if unsafe { ioctls::ENABLE(perf.as_raw_fd(), 0) } < 0 {
            return Err(KretprobeError::Syscall {
                call: "PERF_EVENT_IOC_ENABLE",
                source: std::io::Error::last_os_error(),
            });
        }
        probe.perf = Some(perf);
        Ok(probe)
    }
}

impl Drop for Kretprobe {
    fn drop(&mut self) {
        // The event can only be deleted once nothing holds it open.
        drop(self.perf.take());
        let _ = append(&self.events, &format!("-:{}/{EVENT}\n", self.group));
    }
}

#[cfg(test)]
mod tests {
    use super::{stale_groups, Owner};

    #[test]
    fn only_groups_of_gone_pathtrace_runs_are_stale() {
        let text = "r64:pathtrace_100/nf_hook_slow_ret nf_hook_slow\n\
                    r64:pathtrace_200/nf_hook_slow_ret nf_hook_slow\n\
                    r64:pathtrace_300_70/nf_hook_slow_ret nf_hook_slow\n\
                    r64:pathtrace_300_80/nf_hook_slow_ret nf_hook_slow\n\
                    p:kprobes/other do_sys_open\n\
                    r:aya_300_r_nf_hook_slow_0x0_0 nf_hook_slow\n\
                    r64:pathtrace_x/nf_hook_slow_ret nf_hook_slow\n";
        // 200 is a pathtrace with a pid-only group; 300 started at 80.
        let alive = |o: Owner| matches!((o.pid, o.start), (200, None) | (300, Some(80)));
        assert_eq!(
            stale_groups(text, alive),
            vec!["pathtrace_100", "pathtrace_300_70"]
        );
    }
}
