//! Which tool manages a firewall table or chain, so advice is given in its
//! own syntax.
use serde::Serialize;

use crate::{events::RuleHit, model::Family};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Manager {
    /// iptables-nft: `iptables` on Debian, rules visible to nft as xt matches.
    Iptables,
    IptablesLegacy,
    /// A table written in nftables' own syntax.
    Nft,
    Ufw,
    /// Docker's chains (`DOCKER`, `DOCKER-ISOLATION-*`, and `DOCKER-USER`,
    /// which Docker creates and leaves to the user), or a hook whose path
    /// ran through them. Advice goes to `DOCKER-USER`, the one chain Docker
    /// does not rewrite.
    Docker,
    KubeProxy,
    Firewalld,
    /// Proxmox VE's pve-firewall (`PVEFW-*` chains and a guest's
    /// `veth101i0-IN`, `tap101i0-OUT`, …), which it rewrites from its
    /// `.fw` files.
    Proxmox,
}

const IPTABLES_TABLES: [&str; 5] = ["filter", "nat", "raw", "mangle", "security"];

fn is_docker_chain(chain: &str) -> bool {
    chain == "DOCKER" || chain == "DOCKER-USER" || chain.starts_with("DOCKER-ISOLATION")
}

impl Manager {
    /// The manager of `rule`'s chain, judged also from the chains the same
    /// packet walked in that table (`walked`).
    pub fn of<'a>(rule: &RuleHit, walked: impl IntoIterator<Item = &'a RuleHit>) -> Self {
        let chain = rule.chain.as_str();
        let same_table: Vec<&RuleHit> = walked
            .into_iter()
            .filter(|h| h.netns == rule.netns && h.table == rule.table && h.family == rule.family)
            .collect();
        let walked_through = |f: fn(&str) -> bool| same_table.iter().any(|h| f(&h.chain));
        if rule.table == "firewalld" {
            return Self::Firewalld;
        }
        if is_proxmox_chain(chain) || walked_through(is_proxmox_chain) {
            return Self::Proxmox;
        }
        if chain.starts_with("KUBE-") {
            return Self::KubeProxy;
        }
        if chain.starts_with("ufw-") || chain.starts_with("ufw6-") {
            return Self::Ufw;
        }
        let Some(iptables) = Self::iptables_flavour(rule) else {
            return Self::Nft;
        };
        if is_docker_chain(chain) || (rule.policy && walked_through(is_docker_chain)) {
            return Self::Docker;
        }
        if rule.policy && walked_through(|c| c.starts_with("ufw-") || c.starts_with("ufw6-")) {
            return Self::Ufw;
        }
        if rule.policy && walked_through(|c| c.starts_with("KUBE-")) {
            return Self::KubeProxy;
        }
        iptables
    }

    /// iptables-nft or iptables-legacy, when `rule` is in a table one of
    /// them writes: legacy rules come without an nftables handle.
    pub fn iptables_flavour(rule: &RuleHit) -> Option<Self> {
        if rule.text.as_deref().is_some_and(|t| t.starts_with("-A ")) {
            Some(if rule.handle.is_none() {
                Self::IptablesLegacy
            } else {
                Self::Iptables
            })
        } else if matches!(rule.family.as_str(), "ip" | "ip6")
            && IPTABLES_TABLES.contains(&rule.table.as_str())
            && !rule.chain.chars().any(|c| c.is_ascii_lowercase())
        {
            Some(Self::Iptables)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Iptables => "iptables-nft",
            Self::IptablesLegacy => "iptables-legacy",
            Self::Nft => "nftables",
            Self::Ufw => "ufw",
            Self::Docker => "Docker",
            Self::KubeProxy => "kube-proxy",
            Self::Firewalld => "firewalld",
            Self::Proxmox => "pve-firewall",
        }
    }

    /// The iptables command for this family under this manager.
    pub fn iptables_tool(self, family: Family) -> &'static str {
        match (self, family == Family::Ipv6) {
            (Self::IptablesLegacy, false) => "iptables-legacy",
            (Self::IptablesLegacy, true) => "ip6tables-legacy",
            (_, false) => "iptables",
            (_, true) => "ip6tables",
        }
    }
}

fn is_proxmox_chain(chain: &str) -> bool {
    chain.starts_with("PVEFW-") || proxmox_guest(chain).is_some()
}

/// The guest (VM or container id) whose firewall chain this is:
/// `veth101i0-IN` and `tap101i0-OUT` → `101`.
pub fn proxmox_guest(chain: &str) -> Option<&str> {
    let (dev, dir) = chain.rsplit_once('-')?;
    if !matches!(dir, "IN" | "OUT") {
        return None;
    }
    let rest = dev
        .strip_prefix("veth")
        .or_else(|| dev.strip_prefix("tap"))?;
    let (id, nic) = rest.split_once('i')?;
    (!id.is_empty()
        && id.bytes().all(|b| b.is_ascii_digit())
        && nic.bytes().all(|b| b.is_ascii_digit()))
    .then_some(id)
}

/// The part of a firewalld chain's name after its hook (`filter_IN_public_allow`
/// → `public_allow`).
fn firewalld_suffix(chain: &str) -> Option<&str> {
    ["_IN_", "_FWD_", "_FWDI_", "_FWDO_", "_OUT_"]
        .iter()
        .find_map(|sep| chain.split_once(sep))
        .map(|(_, rest)| rest)
}

/// The firewalld zone a chain belongs to (`filter_IN_public` → `public`);
/// a policy's chain (`filter_FWD_policy_NAME`) belongs to no zone.
/// A zone's name may hold `_` itself (`lab_dmz` → `filter_IN_lab_dmz_allow`).
pub fn firewalld_zone(chain: &str) -> Option<&str> {
    firewalld_suffix(chain)
        .filter(|r| !r.starts_with("policy_"))
        .map(without_part)
        .filter(|z| !z.is_empty())
}

/// A zone's or policy's name without the part of it a chain holds
/// (`public_allow` → `public`).
fn without_part(name: &str) -> &str {
    ["_pre", "_log", "_deny", "_allow", "_post"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

/// The firewalld policy a chain belongs to (`filter_FWD_policy_lan-to-dmz` → `lan-to-dmz`).
pub fn firewalld_policy(chain: &str) -> Option<&str> {
    firewalld_suffix(chain)
        .and_then(|r| r.strip_prefix("policy_"))
        .map(without_part)
        .filter(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(family: Family, table: &str, chain: &str, text: Option<&str>, policy: bool) -> RuleHit {
        RuleHit {
            netns: 1,
            legacy: false,
            table: table.into(),
            family,
            chain: chain.into(),
            hook: None,
            handle: Some(3),
            index: Some(1),
            text: text.map(str::to_owned),
            verdict: crate::model::Verdict::Drop,
            policy,
            tuple: None,
            ip_id: None,
            trace_id: 1,
            received: std::time::Instant::now(),
            received_ns: 0,
            queued_after_ns: 0,
        }
    }

    #[test]
    fn managers_from_tables_and_chains() {
        let nft = hit(Family::Inet, "filter", "input", None, true);
        assert_eq!(Manager::of(&nft, []), Manager::Nft);
        let ipt = hit(Family::Ipv4, "filter", "INPUT", None, true);
        assert_eq!(Manager::of(&ipt, []), Manager::Iptables);
        let ufw_walk = hit(Family::Ipv4, "filter", "ufw-user-input", None, false);
        assert_eq!(Manager::of(&ipt, [&ufw_walk]), Manager::Ufw);
        assert_eq!(Manager::of(&ufw_walk, []), Manager::Ufw);
        let user = hit(
            Family::Ipv4,
            "filter",
            "DOCKER-USER",
            Some("-A DOCKER-USER -j DROP"),
            false,
        );
        assert_eq!(Manager::of(&user, []), Manager::Docker);
        let fwd = hit(Family::Ipv4, "filter", "FORWARD", None, true);
        let dock = hit(Family::Ipv4, "filter", "DOCKER", None, false);
        assert_eq!(Manager::of(&fwd, [&dock]), Manager::Docker);
        let kube = hit(
            Family::Ipv4,
            "filter",
            "KUBE-FORWARD",
            Some("-A KUBE-FORWARD -j DROP"),
            false,
        );
        assert_eq!(Manager::of(&kube, []), Manager::KubeProxy);
        let fw = hit(Family::Inet, "firewalld", "filter_IN_public", None, false);
        assert_eq!(Manager::of(&fw, []), Manager::Firewalld);
        assert_eq!(firewalld_zone("filter_IN_public_deny"), Some("public"));
        assert_eq!(firewalld_zone("filter_IN_lab_dmz"), Some("lab_dmz"));
        assert_eq!(firewalld_zone("filter_IN_lab_dmz_allow"), Some("lab_dmz"));
        assert_eq!(firewalld_zone("filter_FWD_policy_lan-to-dmz_allow"), None);
        assert_eq!(
            firewalld_policy("filter_FWD_policy_lan-to-dmz_allow"),
            Some("lan-to-dmz")
        );
        let pve = hit(
            Family::Ipv4,
            "filter",
            "veth101i0-IN",
            Some("-A veth101i0-IN -j DROP"),
            false,
        );
        assert_eq!(Manager::of(&pve, []), Manager::Proxmox);
        assert_eq!(proxmox_guest("tap2001i1-OUT"), Some("2001"));
        assert_eq!(proxmox_guest("vethxyz-IN"), None);
        let fwd = hit(Family::Ipv4, "filter", "FORWARD", None, true);
        let pvefw = hit(Family::Ipv4, "filter", "PVEFW-FORWARD", None, false);
        assert_eq!(Manager::of(&fwd, [&pvefw]), Manager::Proxmox);
        let mut legacy = hit(
            Family::Ipv4,
            "filter",
            "INPUT",
            Some("-A INPUT -j DROP"),
            false,
        );
        legacy.handle = None;
        assert_eq!(Manager::of(&legacy, []), Manager::IptablesLegacy);
        assert_eq!(
            Manager::IptablesLegacy.iptables_tool(Family::Ipv6),
            "ip6tables-legacy"
        );
    }
}
