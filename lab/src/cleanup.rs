//! Removing a lab: the common end of `Lab::teardown` and `sweep` for leftovers.

use std::fs;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::config::{cgroup_parent, state_dir, validate_prefix, LabNames};
use super::error::LabError;
use super::host::{self, Restore};
use super::{mounts, netns, procs};

/// What `sweep` (or the end of a teardown) found and removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Processes of the lab that were still running: (pid, command line).
    pub killed: Vec<(i32, String)>,
    /// Mount points under the state dir that were unmounted.
    pub unmounted: Vec<String>,
    /// Namespaces deleted.
    pub namespaces: Vec<String>,
    /// Whether the state dir existed and was removed.
    pub state_dir_removed: bool,
    /// Why host paths created by the lab's tools (/run/netns, /run/docker,
    /// /run/containerd) were left in place for now, if they were.
    pub host_paths_kept: Option<String>,
}

impl SweepReport {
    /// Whether nothing was left over.
    pub fn is_clean(&self) -> bool {
        self.killed.is_empty()
            && self.unmounted.is_empty()
            && self.namespaces.is_empty()
            && !self.state_dir_removed
    }
}

pub(crate) fn require_root() -> Result<(), LabError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        Ok(())
    } else {
        Err(LabError::NotRoot)
    }
}

/// Finds and removes what a killed earlier run of the lab with this prefix left behind:
/// its processes (dockerd, containerd, shims, docker-proxy, httpd, container processes
/// — only those whose command line names `/run/pathtrace-lab/{prefix}` or that sit in
/// its cgroup), mounts under the state dir, its namespaces, its cgroups and the state
/// dir. Then, if it was the last lab, puts back the host paths the lab's tools created.
pub fn sweep(prefix: &str) -> Result<SweepReport, LabError> {
    validate_prefix(prefix)?;
    require_root()?;
    let mut report = SweepReport::default();
    let problems = remove_all(prefix, &mut report);
    if !report.is_clean() {
        log::warn!("lab {prefix}: removed leftovers of an earlier run: {report:?}");
    }
    if problems.is_empty() {
        Ok(report)
    } else {
        Err(LabError::Cleanup(problems))
    }
}

/// Removes everything of lab `prefix`; returns problems as messages.
pub(crate) fn remove_all(prefix: &str, report: &mut SweepReport) -> Vec<String> {
    let state = state_dir(prefix);
    let names = LabNames::new(prefix);
    let cgroup = cgroup_parent(prefix);
    let mut problems = Vec::new();

    // 1. Processes. First the containers' (in the lab's cgroup): as pid 1 they ignore
    //    SIGTERM, and dockerd would wait 10 s for each. Then dockerd, with a grace
    //    period: on SIGTERM it stops its containerd and unmounts what it mounted. Then
    //    whatever is left (containerd, shims, docker-proxy, the emulated httpd).
    let found = procs::find(&state, &cgroup);
    let (containers, rest): (Vec<_>, Vec<_>) = found.into_iter().partition(|p| p.container);
    let (dockerds, others): (Vec<_>, Vec<_>) = rest.into_iter().partition(|p| {
        p.cmdline
            .split(' ')
            .next()
            .is_some_and(|a| a.ends_with("dockerd"))
    });
    for (list, grace) in [(containers, 0u64), (dockerds, 15), (others, 3)] {
        if list.is_empty() {
            continue;
        }
        let pids: Vec<i32> = list.iter().map(|p| p.pid).collect();
        let survivors = procs::terminate(&pids, Duration::from_secs(grace));
        report
            .killed
            .extend(list.into_iter().map(|p| (p.pid, p.cmdline)));
        for pid in survivors {
            problems.push(format!("process {pid} survived SIGKILL"));
        }
    }
    // Processes found by the second scan: shims re-parented meanwhile, container processes.
    let late: Vec<i32> = procs::find(&state, &cgroup).iter().map(|p| p.pid).collect();
    for pid in procs::terminate(&late, Duration::from_secs(2)) {
        problems.push(format!("process {pid} survived SIGKILL"));
    }

    // 2. Mounts under the state dir (netns bind mounts, the data-root bind mount, ...).
    let points = mounts::under(&state);
    report
        .unmounted
        .extend(points.iter().map(|p| p.display().to_string()));
    problems.extend(mounts::unmount_all_under(&state));

    // 3. Namespaces, the container's first.
    for name in names.all().iter().rev() {
        if netns::exists(name) {
            match netns::delete(name) {
                Ok(()) => report.namespaces.push(name.to_string()),
                Err(e) => problems.push(e.to_string()),
            }
        }
    }

    // 4. The containers' cgroups.
    problems.extend(mounts::remove_cgroup(&cgroup));

    // 5. The state dir, but never while something is still mounted under it.
    if state.exists() {
        if mounts::under(&state).is_empty() {
            match fs::remove_dir_all(&state) {
                Ok(()) => report.state_dir_removed = true,
                Err(e) => problems.push(format!("rm -r {}: {e}", state.display())),
            }
        } else {
            problems.push(format!("{} kept: mounts remain under it", state.display()));
        }
    }

    // 6. Host paths created by the lab's tools, once no lab is left.
    if problems.is_empty() {
        match host::restore_if_last() {
            Restore::NothingToDo => {}
            Restore::OtherLabs => {
                report.host_paths_kept = Some("other labs are running".into());
            }
            Restore::DaemonRunning(pid, comm) => {
                report.host_paths_kept = Some(format!("{comm} {pid} is running"));
            }
            Restore::Done {
                kept,
                problems: more,
            } => {
                if !kept.is_empty() {
                    report.host_paths_kept = Some(format!("in use: {}", kept.join("; ")));
                }
                problems.extend(more);
            }
        }
    }
    problems
}

/// Whether anything of lab `prefix` is still present (for checks after teardown).
pub fn leftovers(prefix: &str) -> Vec<String> {
    let state = state_dir(prefix);
    let names = LabNames::new(prefix);
    let mut left: Vec<String> = procs::find(&state, &cgroup_parent(prefix))
        .into_iter()
        .map(|p| format!("process {} {}", p.pid, p.cmdline))
        .collect();
    left.extend(
        mounts::under(&state)
            .into_iter()
            .map(|p| format!("mount {}", p.display())),
    );
    left.extend(
        names
            .all()
            .iter()
            .filter(|n| netns::exists(n))
            .map(|n| format!("namespace {n}")),
    );
    for root in mounts::cgroup_roots() {
        let dir = root.join(cgroup_parent(prefix));
        if dir.exists() {
            left.push(format!("cgroup {}", dir.display()));
        }
    }
    if Path::new(&state).exists() {
        left.push(format!("state dir {}", state.display()));
    }
    left
}
