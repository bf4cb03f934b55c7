//! The cost curves: how start-up and memory grow with the host. Each step
//! is a host of one size, built in namespaces of its own: service rules
//! (iptables-nft or nft native), namespaces or veth pairs (`hosts`), or
//! containers in a real dockerd (`containers`). In each run pathtrace
//! starts following a flow into that host with rule tracing on (it arms it
//! where there are rules before its ready line), and the run records the
//! time to its ready line, the time from the first packet to the first
//! rule-attributed hop in the host's namespace, its peak RSS and the kernel
//! memory it holds then (`probe`). Everything is removed after each step,
//! and on any exit.
mod containers;
mod hosts;
pub mod plot;
mod probe;
mod targets;

use std::{fmt::Write as _, net::SocketAddrV4, time::Instant};

use serde::{Deserialize, Serialize};

use crate::{
    peers::Tools,
    stats::{show, Summary},
};
use containers::Containers;
use probe::{Figures, Probe, Traffic};

/// What grows in a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Axis {
    /// Service rules in a nat chain of `s`, written by iptables-nft.
    IptablesRules,
    /// The same rules as an nft native table.
    NftRules,
    /// Namespaces with a small firewall, `s` among them.
    Namespaces,
    /// veth pairs in `s`.
    Veths,
    /// Containers in a real dockerd, each with a published port.
    Containers,
}

impl Axis {
    pub const ALL: [Axis; 5] = [
        Axis::IptablesRules,
        Axis::NftRules,
        Axis::Namespaces,
        Axis::Veths,
        Axis::Containers,
    ];

    /// A file name's part.
    pub fn file_stem(self) -> &'static str {
        match self {
            Axis::IptablesRules => "iptables-rules",
            Axis::NftRules => "nft-rules",
            Axis::Namespaces => "namespaces",
            Axis::Veths => "veths",
            Axis::Containers => "containers",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Axis::IptablesRules => "iptables-nft rules",
            Axis::NftRules => "nft rules",
            Axis::Namespaces => "namespaces",
            Axis::Veths => "veth pairs",
            Axis::Containers => "containers (real dockerd)",
        }
    }
}

/// The sizes of each axis: `quick` for CI.
fn steps(quick: bool) -> Vec<(Axis, usize)> {
    let (rules, nss, veths, ctrs): (&[usize], &[usize], &[usize], &[usize]) = if quick {
        (&[0, 1000, 10_000], &[10], &[100], &[1, 5])
    } else {
        (
            &[0, 1000, 10_000, 50_000],
            &[10, 100, 500],
            &[100, 1000],
            &[1, 10, 50],
        )
    };
    let mut out = Vec::new();
    for axis in [Axis::IptablesRules, Axis::NftRules] {
        out.extend(rules.iter().map(|&n| (axis, n)));
    }
    out.extend(nss.iter().map(|&n| (Axis::Namespaces, n)));
    out.extend(veths.iter().map(|&n| (Axis::Veths, n)));
    out.extend(ctrs.iter().map(|&n| (Axis::Containers, n)));
    out
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepResult {
    pub axis: Axis,
    pub size: usize,
    /// Seconds to build the host of this size (containers: to start
    /// dockerd and `web`, or to run the containers added since the last step).
    pub build_secs: f64,
    pub ready_ms: Option<Summary>,
    pub first_rule_hop_ms: Option<Summary>,
    pub peak_rss_kib: Option<Summary>,
    /// `memlock` of the BPF maps pathtrace holds, KiB.
    pub kernel_maps_kib: Option<Summary>,
    /// `memlock` of its BPF programs, KiB.
    pub kernel_progs_kib: Option<Summary>,
    /// Named namespaces (`/run/netns`) on the machine that are not the
    /// step's: other labs' and tests'. pathtrace sees them too.
    pub other_netns: usize,
    pub errors: Vec<String>,
}

impl StepResult {
    fn new(axis: Axis, size: usize) -> StepResult {
        StepResult {
            axis,
            size,
            build_secs: 0.0,
            ready_ms: None,
            first_rule_hop_ms: None,
            peak_rss_kib: None,
            kernel_maps_kib: None,
            kernel_progs_kib: None,
            other_netns: other_netns(),
            errors: Vec::new(),
        }
    }

    fn fill(&mut self, got: &[Figures]) {
        let of = |f: fn(&Figures) -> f64| Summary::of(&got.iter().map(f).collect::<Vec<_>>());
        self.ready_ms = of(|x| x.ready_ms);
        self.first_rule_hop_ms = of(|x| x.first_rule_hop_ms);
        self.peak_rss_kib = of(|x| x.peak_rss_kib);
        self.kernel_maps_kib = of(|x| x.maps_kib);
        self.kernel_progs_kib = of(|x| x.progs_kib);
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Scale {
    pub quick: bool,
    pub runs_per_step: usize,
    pub steps: Vec<StepResult>,
}

/// How many named namespaces are neither a host step's nor the containers'.
fn other_netns() -> usize {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return 0;
    };
    dir.flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            !name.starts_with(hosts::NETNS_PREFIX) && !name.starts_with(containers::NETNS_PREFIX)
        })
        .count()
}

/// The start of an error's first line, for the table.
fn first_line(e: &anyhow::Error) -> String {
    format!("{e:#}")
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(240)
        .collect()
}

/// `runs` runs of `probe`, into `r`.
fn measure(tools: &Tools, probe: &Probe, runs: usize, r: &mut StepResult) {
    let mut got = Vec::new();
    for i in 0..runs {
        let file = tools.work.join(format!("scale-{i}.json"));
        match probe::one_run(tools, probe, &file) {
            Ok(x) => got.push(x),
            Err(e) => r.errors.push(first_line(&e)),
        }
        let _ = std::fs::remove_file(&file);
    }
    r.fill(&got);
}

/// A namespace step: UDP from the client to the server's port.
fn host_step(tools: &Tools, axis: Axis, size: usize, runs: usize) -> StepResult {
    let mut r = StepResult::new(axis, size);
    let t = Instant::now();
    let built = hosts::build(axis, size);
    r.build_secs = t.elapsed().as_secs_f64();
    match built {
        Ok(()) => {
            let probe = Probe {
                filter: [
                    "--src",
                    &hosts::CLIENT_ADDR.to_string(),
                    "--proto",
                    "udp",
                    "--dport",
                    &hosts::PORT.to_string(),
                ]
                .map(String::from)
                .to_vec(),
                traffic: Traffic::Udp {
                    ns: hosts::CLIENT.into(),
                    from: hosts::CLIENT_ADDR,
                    to: SocketAddrV4::new(hosts::SERVER_ADDR, hosts::PORT),
                },
                awaited_ns: hosts::SERVER.into(),
            };
            measure(tools, &probe, runs, &mut r);
        }
        Err(e) => r.errors.push(first_line(&e.context("building"))),
    }
    hosts::teardown();
    r
}

/// The real dockerd of the containers steps: not started yet, running, or
/// failed to start (why).
enum Dockerd {
    NotYet,
    Up(Box<Containers>),
    Failed(String),
}

/// A containers step: the dockerd started (first step) or grown to `size`.
fn containers_step(tools: &Tools, dockerd: &mut Dockerd, size: usize, runs: usize) -> StepResult {
    let mut r = StepResult::new(Axis::Containers, size);
    let t = Instant::now();
    if matches!(dockerd, Dockerd::NotYet) {
        *dockerd = match Containers::start() {
            Ok(c) => Dockerd::Up(Box::new(c)),
            Err(e) => Dockerd::Failed(first_line(&e)),
        };
    }
    let c = match dockerd {
        Dockerd::Up(c) => c,
        Dockerd::Failed(why) => {
            r.errors.push(why.clone());
            return r;
        }
        Dockerd::NotYet => return r,
    };
    let grown = c.grow_to(size);
    r.build_secs = t.elapsed().as_secs_f64();
    match grown {
        Ok(_) => measure(tools, &c.probe(), runs, &mut r),
        Err(e) => r.errors.push(first_line(&e)),
    }
    r
}

/// Runs every step; results in order.
pub fn run(tools: &Tools, quick: bool, stop: impl Fn() -> bool) -> Scale {
    let runs = if quick { 1 } else { 3 };
    let mut out = Vec::new();
    let mut dockerd = Dockerd::NotYet;
    hosts::teardown();
    for (axis, size) in steps(quick) {
        if stop() {
            break;
        }
        eprintln!("pathtrace-bench: scale: {} {size}", axis.label());
        let r = match axis {
            Axis::Containers => containers_step(tools, &mut dockerd, size, runs),
            _ => host_step(tools, axis, size, runs),
        };
        for e in &r.errors {
            eprintln!("pathtrace-bench: scale: {} {size}: {e}", axis.label());
        }
        out.push(r);
    }
    if let Dockerd::Up(c) = dockerd {
        if let Err(e) = c.teardown() {
            let msg = first_line(&e);
            eprintln!("pathtrace-bench: scale: {msg}");
            if let Some(last) = out.iter_mut().rfind(|r| r.axis == Axis::Containers) {
                last.errors.push(msg);
            }
        }
    }
    Scale {
        quick,
        runs_per_step: runs,
        steps: out,
    }
}

impl Scale {
    /// The step of this axis and size, if it ran.
    pub fn step(&self, axis: Axis, size: usize) -> Option<&StepResult> {
        self.steps.iter().find(|s| s.axis == axis && s.size == size)
    }

    /// Steps that failed.
    pub fn failed(&self) -> usize {
        self.steps.iter().filter(|s| !s.errors.is_empty()).count()
    }

    /// The curves' section of the report.
    pub fn markdown(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "\n## 5. Cost curves: start-up and memory by the host's size\n\n\
             Each step builds a host of one size in namespaces of its own: a client (198.51.100.1) and a server (198.51.100.2) joined by a veth, with in the server the step's service rules (iptables-nft or nft native), or that many namespaces each with a small firewall, or that many veth pairs; or a real dockerd running that many busybox httpd containers, each with a published port, grown from one step to the next in the same dockerd. \
             pathtrace (rule tracing on: it arms it in the namespaces with rules before it says ready) follows UDP from the client to the server's port {} (containers: TCP from the lab's `other` host to web's published port), one datagram or connection every 20 ms; the first rule-attributed hop is the first `nf_rule` hop in the server's (the Docker host's) namespace on its JSON output, timed from the first packet sent. \
             Peak RSS and kernel memory (the `memlock` of the BPF maps and programs it holds) are read at that moment. \
             \"Other namespaces\" counts the named namespaces on the machine that are not the step's (other labs' and tests'), taken before the step: pathtrace sees them too, and arms rule tracing in those with rules. {} run(s) per step; median [min–max].\n",
            hosts::PORT,
            self.runs_per_step
        );
        let _ = writeln!(
            s,
            "| what | size | build s | ready ms | first rule-attributed hop ms | peak RSS MiB | kernel maps KiB | kernel programs KiB | other namespaces | errors |"
        );
        let _ = writeln!(
            s,
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        );
        for r in &self.steps {
            let _ = writeln!(
                s,
                "| {} | {} | {:.1} | {} | {} | {} | {} | {} | {} | {} |",
                r.axis.label(),
                r.size,
                r.build_secs,
                show(&r.ready_ms, |v| format!("{v:.0}")),
                show(&r.first_rule_hop_ms, |v| format!("{v:.0}")),
                show(&r.peak_rss_kib, |v| format!("{:.1}", v / 1024.0)),
                show(&r.kernel_maps_kib, |v| format!("{v:.0}")),
                show(&r.kernel_progs_kib, |v| format!("{v:.0}")),
                r.other_netns,
                r.errors.join("; ").replace(['\n', '|'], " ")
            );
        }
    }
}
