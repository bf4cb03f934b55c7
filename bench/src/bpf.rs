//! The BPF objects a process holds (from /proc/PID/fd and fdinfo) and what
//! `bpftool` says about them.
use std::{process::Command, time::Duration};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::Value;

use crate::children;

/// Indices of pathtrace's per-CPU `COUNTERS`.
pub const COUNTER_LOST: usize = tracer_common::counter::LOST as usize;
pub const COUNTER_SENT: usize = tracer_common::counter::SENT as usize;

/// One BPF program a process holds.
#[derive(Clone, Debug, Serialize)]
pub struct ProgFd {
    pub id: u64,
    /// Instructions the verifier processed to accept it (kernel 5.16+).
    pub verified_insns: Option<u64>,
    pub memlock: Option<u64>,
    pub name: Option<String>,
}

/// The BPF maps and programs a process holds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Held {
    pub map_ids: Vec<u64>,
    /// The maps' `memlock` added up (what `bpftool` shows as `bytes_memlock`).
    pub map_memlock: u64,
    pub progs: Vec<ProgFd>,
}

/// Reads /proc/PID/fd and fdinfo for BPF maps and programs.
pub fn held_by(pid: i32) -> Result<Held> {
    let dir = format!("/proc/{pid}/fd");
    let mut held = Held::default();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let Ok(entry) = entry else { continue };
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        let is_map = target == "anon_inode:bpf-map";
        let is_prog = target == "anon_inode:bpf-prog";
        if !is_map && !is_prog {
            continue;
        }
        let fdinfo = format!("/proc/{pid}/fdinfo/{}", entry.file_name().to_string_lossy());
        let Ok(info) = std::fs::read_to_string(&fdinfo) else {
            continue;
        };
        let field = |name: &str| -> Option<u64> {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim_start_matches(':').trim().parse().ok())
        };
        if is_map {
            if let Some(id) = field("map_id") {
                held.map_ids.push(id);
                held.map_memlock += field("memlock").unwrap_or(0);
            }
        } else if let Some(id) = field("prog_id") {
            held.progs.push(ProgFd {
                id,
                verified_insns: field("verified_insns"),
                memlock: field("memlock"),
                name: None,
            });
        }
    }
    held.map_ids.sort_unstable();
    held.progs.sort_by_key(|p| p.id);
    Ok(held)
}

/// One map as `bpftool -j map show` lists it.
#[derive(Clone, Debug, Serialize)]
pub struct MapInfo {
    pub id: u64,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub max_entries: u64,
    pub bytes_memlock: u64,
}

fn bpftool(args: &[&str]) -> Result<Value> {
    let mut cmd = Command::new("bpftool");
    cmd.args(args);
    let out = children::output(cmd, Duration::from_secs(20))?;
    serde_json::from_str(&out).with_context(|| format!("parsing `bpftool {}`", args.join(" ")))
}

/// `bpftool -j map show`, restricted to `ids`.
pub fn maps(ids: &[u64]) -> Result<Vec<MapInfo>> {
    let v = bpftool(&["-j", "map", "show"])?;
    let Some(list) = v.as_array() else {
        bail!("`bpftool -j map show` did not print a list");
    };
    let mut maps = Vec::new();
    for m in list {
        let Some(id) = m.get("id").and_then(Value::as_u64) else {
            continue;
        };
        if !ids.contains(&id) {
            continue;
        }
        maps.push(MapInfo {
            id,
            name: m
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            kind: m
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            max_entries: m.get("max_entries").and_then(Value::as_u64).unwrap_or(0),
            bytes_memlock: m.get("bytes_memlock").and_then(Value::as_u64).unwrap_or(0),
        });
    }
    Ok(maps)
}

/// Names of the programs with these ids (`bpftool -j prog show`). The
/// kernel keeps 15 bytes of a name, so two programs can share one
/// (`nf_hook_slow_fentry` and `nf_hook_slow_fexit` are both
/// `nf_hook_slow_fe`): those get their link's attach type after the name.
pub fn name_progs(progs: &mut [ProgFd]) -> Result<()> {
    let v = bpftool(&["-j", "prog", "show"])?;
    for p in v.as_array().into_iter().flatten() {
        let id = p.get("id").and_then(Value::as_u64);
        if let Some(mine) = progs.iter_mut().find(|x| Some(x.id) == id) {
            mine.name = p.get("name").and_then(Value::as_str).map(str::to_string);
        }
    }
    let shared: Vec<u64> = progs
        .iter()
        .filter(|p| p.name.is_some() && progs.iter().filter(|q| q.name == p.name).count() > 1)
        .map(|p| p.id)
        .collect();
    if shared.is_empty() {
        return Ok(());
    }
    for (prog, link) in links(&shared)? {
        if let (Some(p), Some(kind)) = (
            progs.iter_mut().find(|p| p.id == prog),
            link.get("attach_type").and_then(Value::as_str),
        ) {
            if let Some(name) = &mut p.name {
                *name = format!("{name} ({kind})");
            }
        }
    }
    Ok(())
}

/// The links of the programs with these ids (`bpftool -j link show`), with
/// each one's program id.
fn links(prog_ids: &[u64]) -> Result<Vec<(u64, Value)>> {
    let v = bpftool(&["-j", "link", "show"])?;
    let Value::Array(all) = v else {
        bail!("`bpftool -j link show` did not print a list");
    };
    Ok(all
        .into_iter()
        .filter_map(|l| {
            let prog = l.get("prog_id").and_then(Value::as_u64)?;
            prog_ids.contains(&prog).then_some((prog, l))
        })
        .collect())
}

/// Where the programs with these ids are attached: one name per link, the
/// tracepoint's for (BTF) raw tracepoint links, else the link's type and
/// attach type (`bpftool -j link show`).
pub fn attach_points(prog_ids: &[u64]) -> Result<Vec<String>> {
    let mut out: Vec<String> = links(prog_ids)?
        .into_iter()
        .map(|(_, l)| {
            let text = |k: &str| l.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
            match l.get("tp_name").and_then(Value::as_str) {
                Some(tp) => tp.to_string(),
                None => format!("{} {}", text("type"), text("attach_type")),
            }
        })
        .collect();
    out.sort();
    Ok(out)
}

/// A bpftool value: a number, or little-endian bytes as `"0x.."` strings.
fn value_u64(v: &Value) -> Option<u64> {
    if let Some(n) = v.as_u64() {
        return Some(n);
    }
    let bytes = v.as_array()?;
    let mut out = 0u64;
    for (i, b) in bytes.iter().enumerate().take(8) {
        let s = b.as_str()?;
        let byte = u64::from_str_radix(s.trim_start_matches("0x"), 16).ok()?;
        out |= byte << (8 * i);
    }
    Some(out)
}

/// Totals over CPUs of a per-CPU array of u64 (`bpftool -j map dump id ID`), by key.
pub fn percpu_totals(id: u64) -> Result<Vec<u64>> {
    let v = bpftool(&["-j", "map", "dump", "id", &id.to_string()])?;
    let Some(rows) = v.as_array() else {
        bail!("`bpftool map dump id {id}` did not print a list");
    };
    let mut totals = Vec::new();
    for row in rows {
        // With BTF the row is {"key":..,"values":[{"cpu":0,"value":..}]}, maybe
        // wrapped in "formatted".
        let row = row.get("formatted").unwrap_or(row);
        let key = row
            .get("key")
            .and_then(value_u64)
            .context("a COUNTERS row without a key")?;
        let sum: u64 = row
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("value").and_then(value_u64))
            .sum();
        let key = usize::try_from(key).context("key out of range")?;
        if totals.len() <= key {
            totals.resize(key + 1, 0);
        }
        totals[key] = sum;
    }
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::value_u64;

    #[test]
    fn reads_bpftool_values() {
        let v: serde_json::Value =
            serde_json::from_str(r#"["0x10","0x27","0x00","0x00","0x00","0x00","0x00","0x00"]"#)
                .expect("json");
        assert_eq!(value_u64(&v), Some(10000));
        assert_eq!(value_u64(&serde_json::json!(7)), Some(7));
    }
}
