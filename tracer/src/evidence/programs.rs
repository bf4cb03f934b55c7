//! BPF programs attached outside netfilter that drop packets: tc (cls_bpf
//! on clsact ingress or egress) and XDP, named from what `tc -j filter
//! show` and `ip -j link show` say in the packet's namespace.
use std::path::Path;

use serde_json::Value;

/// A program attached to an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    /// `tc ingress`, `tc egress`, `XDP (generic)`, `XDP (native)`, …
    pub hook: String,
    pub dev: String,
    pub id: u64,
    pub name: String,
    /// tc: the filter's preference (its order among the device's filters).
    pub pref: Option<u64>,
}

/// The tc programs of `dev`'s `direction` (`ingress` or `egress`), from
/// `tc -j filter show`'s answer.
fn parse_tc(json: &Value, dev: &str, direction: &str) -> Vec<Attached> {
    json.as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["kind"] == "bpf")
        .filter_map(|f| {
            let prog = &f["options"]["prog"];
            Some(Attached {
                hook: format!("tc {direction}"),
                dev: dev.to_owned(),
                id: prog["id"].as_u64()?,
                name: prog["name"].as_str().unwrap_or_default().to_owned(),
                pref: f["pref"].as_u64(),
            })
        })
        .collect()
}

/// The XDP program of `dev`, from `ip -j link show`'s answer.
fn parse_xdp(json: &Value, dev: &str) -> Option<Attached> {
    let xdp = &json.as_array()?.first()?["xdp"];
    let mode = match xdp["mode"].as_u64()? {
        1 => "XDP (native)",
        2 => "XDP (generic)",
        3 => "XDP (offloaded)",
        _ => "XDP",
    };
    let prog = &xdp["prog"];
    Some(Attached {
        hook: mode.to_owned(),
        dev: dev.to_owned(),
        id: prog["id"].as_u64()?,
        name: prog["name"].as_str().unwrap_or_default().to_owned(),
        pref: None,
    })
}

fn json_of(netns: Option<&Path>, prog: &str, args: &[&str]) -> Option<Value> {
    serde_json::from_str(&in_netns::output(netns, prog, args).ok()?).ok()
}

/// Whether this kernel has tc's `pass` action (`act_gact`), which a
/// filter needs to let a flow through ahead of another: from its
/// configuration (`/boot/config-RELEASE` or `/proc/config.gz`); a kernel
/// whose configuration can't be read is taken to have it, as
/// distribution kernels do.
pub fn tc_pass_available() -> bool {
    use std::io::Read;
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let config = std::fs::read_to_string(format!("/boot/config-{}", release.trim()))
        .ok()
        .or_else(|| {
            let gz = std::fs::File::open("/proc/config.gz").ok()?;
            let mut text = String::new();
            flate2::read::GzDecoder::new(gz)
                .read_to_string(&mut text)
                .ok()?;
            Some(text)
        });
    config.is_none_or(|c| {
        c.lines()
            .any(|l| l == "CONFIG_NET_ACT_GACT=y" || l == "CONFIG_NET_ACT_GACT=m")
    })
}

/// The tc programs on `dev` in `direction`, in the namespace at `netns`.
pub fn tc(netns: Option<&Path>, dev: &str, direction: &str) -> Vec<Attached> {
    json_of(
        netns,
        "tc",
        &["-j", "filter", "show", "dev", dev, direction],
    )
    .map(|j| parse_tc(&j, dev, direction))
    .unwrap_or_default()
}

/// The XDP program on `dev`, in the namespace at `netns`.
pub fn xdp(netns: Option<&Path>, dev: &str) -> Option<Attached> {
    json_of(netns, "ip", &["-j", "link", "show", "dev", dev]).and_then(|j| parse_xdp(&j, dev))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_from_tc_and_ip() {
        let tc: Value = serde_json::from_str(
            r#"[{"protocol":"all","pref":49152,"kind":"bpf","chain":0},{"protocol":"all","pref":49152,"kind":"bpf","chain":0,"options":{"handle":"0x1","bpf_name":"pinned","direct-action":true,"not_in_hw":true,"prog":{"id":42,"name":"pt_tc_drop","tag":"a04f5eef06a7f555","jited":1}}}]"#,
        )
        .expect("json");
        assert_eq!(
            parse_tc(&tc, "b0", "ingress"),
            vec![Attached {
                hook: "tc ingress".into(),
                dev: "b0".into(),
                id: 42,
                name: "pt_tc_drop".into(),
                pref: Some(49152),
            }]
        );
        let ip: Value = serde_json::from_str(
            r#"[{"ifindex":2,"ifname":"b0","xdp":{"mode":2,"prog":{"id":51,"name":"pt_xdp_drop","tag":"x","jited":1}}}]"#,
        )
        .expect("json");
        let x = parse_xdp(&ip, "b0").expect("xdp");
        assert_eq!(
            (x.hook.as_str(), x.id, x.name.as_str()),
            ("XDP (generic)", 51, "pt_xdp_drop")
        );
    }
}
