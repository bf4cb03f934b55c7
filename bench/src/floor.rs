//! The floor: a program that does nothing (`tracer-ebpf/src/bin/floor.rs`),
//! loaded by the benchmark itself once on each tracepoint a contender
//! attaches to. What the kernel spends running it there is the least any
//! tracer on those tracepoints can cost.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use aya::{programs::BtfTracePoint, Btf, Ebpf};

use crate::bpf::ProgFd;

/// Where `cargo xtask build-ebpf` (and `cargo xtask bench`) leave the object.
pub fn default_object() -> PathBuf {
    crate::workspace_root().join("tracer-ebpf/target/bpfel-unknown-none/release/floor")
}

/// The empty programs, attached while the value lives.
pub struct Floor {
    /// One loaded object per tracepoint (a program loads for one target).
    _objects: Vec<Ebpf>,
    pub progs: Vec<ProgFd>,
}

impl Floor {
    /// Loads the empty program from `object` on each of `tracepoints` (the
    /// kernel's names, as `bpftool link show` gives them).
    pub fn attach(object: &Path, tracepoints: &[String]) -> Result<Floor> {
        if tracepoints.is_empty() {
            bail!("no tracepoints to put the floor on");
        }
        let bytes = std::fs::read(object).with_context(|| {
            format!(
                "reading the floor's object {} (`cargo xtask build-ebpf` builds it)",
                object.display()
            )
        })?;
        let btf = Btf::from_sys_fs().context("reading the kernel's BTF")?;
        let mut objects = Vec::new();
        let mut progs = Vec::new();
        for tp in tracepoints {
            let mut obj = Ebpf::load(&bytes).context("loading the floor's object")?;
            let prog: &mut BtfTracePoint = obj
                .program_mut("floor")
                .context("the floor's object has no program `floor`")?
                .try_into()?;
            prog.load(tp, &btf)
                .with_context(|| format!("loading the floor on {tp}"))?;
            prog.attach()
                .with_context(|| format!("attaching the floor to {tp}"))?;
            let info = prog.info()?;
            progs.push(ProgFd {
                id: u64::from(info.id()),
                verified_insns: None,
                memlock: None,
                name: Some(format!("floor on {tp}")),
            });
            objects.push(obj);
        }
        Ok(Floor {
            _objects: objects,
            progs,
        })
    }
}
