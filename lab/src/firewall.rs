//! iptables on the Docker host: running it with the chosen backend, Docker 20.10's
//! rules (for the emulation), and the client blocks.

use std::path::Path;
use std::process::Output;

use super::cmd::Cmd;
use super::config::{
    Block, Firewall, BRIDGE_CIDR, CLIENT_IP, CONTAINER_IP, CONTAINER_PORT, PUBLISHED_PORT,
};
use super::error::LabError;

/// Runs `iptables -w ARGS` (backend `fw`) in the namespace at `ns_path`, with the
/// xtables lock file kept in the lab's state dir instead of /run.
pub(crate) fn iptables(
    ns_path: &Path,
    fw: Firewall,
    lock_file: &Path,
    args: &[&str],
) -> Result<Output, LabError> {
    Cmd::in_netns(ns_path, fw.iptables())
        .arg("-w")
        .args(args)
        .env("XTABLES_LOCKFILE", lock_file.display().to_string())
        .run()
}

/// Feeds `rules` to `iptables-restore -w` (backend `fw`) in the namespace at `ns_path`.
pub(crate) fn restore(
    ns_path: &Path,
    fw: Firewall,
    lock_file: &Path,
    rules: &str,
) -> Result<(), LabError> {
    Cmd::in_netns(ns_path, fw.iptables_restore())
        .arg("-w")
        .env("XTABLES_LOCKFILE", lock_file.display().to_string())
        .stdin(rules.as_bytes().to_vec())
        .run()
        .map(|_| ())
}

/// The rules Docker 20.10 writes for `docker run -p 8092:80` on the default bridge
/// (`--bip 198.51.100.1/24`, container 198.51.100.2), as `iptables-save` prints them
/// from a real dockerd in this lab.
pub(crate) fn docker_rules() -> String {
    let ctr = CONTAINER_IP;
    let port = CONTAINER_PORT;
    let published = PUBLISHED_PORT;
    let net = BRIDGE_CIDR;
    format!(
        "*nat\n\
         :PREROUTING ACCEPT [0:0]\n\
         :INPUT ACCEPT [0:0]\n\
         :OUTPUT ACCEPT [0:0]\n\
         :POSTROUTING ACCEPT [0:0]\n\
         :DOCKER - [0:0]\n\
         -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n\
         -A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER\n\
         -A POSTROUTING -s {net} ! -o docker0 -j MASQUERADE\n\
         -A POSTROUTING -s {ctr}/32 -d {ctr}/32 -p tcp -m tcp --dport {port} -j MASQUERADE\n\
         -A DOCKER -i docker0 -j RETURN\n\
         -A DOCKER ! -i docker0 -p tcp -m tcp --dport {published} -j DNAT --to-destination {ctr}:{port}\n\
         COMMIT\n\
         *filter\n\
         :INPUT ACCEPT [0:0]\n\
         :FORWARD ACCEPT [0:0]\n\
         :OUTPUT ACCEPT [0:0]\n\
         :DOCKER - [0:0]\n\
         :DOCKER-ISOLATION-STAGE-1 - [0:0]\n\
         :DOCKER-ISOLATION-STAGE-2 - [0:0]\n\
         :DOCKER-USER - [0:0]\n\
         -A FORWARD -j DOCKER-USER\n\
         -A FORWARD -j DOCKER-ISOLATION-STAGE-1\n\
         -A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
         -A FORWARD -o docker0 -j DOCKER\n\
         -A FORWARD -i docker0 ! -o docker0 -j ACCEPT\n\
         -A FORWARD -i docker0 -o docker0 -j ACCEPT\n\
         -A DOCKER -d {ctr}/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport {port} -j ACCEPT\n\
         -A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2\n\
         -A DOCKER-ISOLATION-STAGE-1 -j RETURN\n\
         -A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP\n\
         -A DOCKER-ISOLATION-STAGE-2 -j RETURN\n\
         -A DOCKER-USER -j RETURN\n\
         COMMIT\n"
    )
}

/// One change to the filter table: a rule (insert/delete) or the FORWARD policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RuleChange {
    /// `-I CHAIN 1 SPEC` to apply, `-D CHAIN SPEC` to undo.
    Rule {
        chain: &'static str,
        spec: Vec<String>,
    },
    /// `-P FORWARD DROP` to apply, `-P FORWARD ACCEPT` to undo.
    ForwardPolicyDrop,
}

/// The changes that implement `block` against the client (192.0.2.9).
///
/// `PolicyDrop`: the FORWARD policy becomes DROP, and a rule at the top of Docker's
/// `DOCKER` chain RETURNs the client's packets. A rule in `DOCKER-USER` can't do this:
/// whatever it jumps to, a non-terminal verdict comes back to FORWARD, which goes on to
/// `-o docker0 -j DOCKER`, whose per-container ACCEPT matches the DNATed packet. Returned
/// from `DOCKER` early, the client's packet meets only FORWARD's `-i docker0 ...` rules,
/// which don't match a packet coming in on eth0, so it falls off the end of FORWARD and
/// the chain *policy* drops it (an nftables trace shows verdict type "policy" in FORWARD;
/// the counters show it in `iptables -L FORWARD -v`'s "policy DROP N packets"). Replies
/// from the container still pass (`-i docker0 ! -o docker0 -j ACCEPT`), so other
/// machines keep working. This is what a host looks like when Docker's own accepting
/// rule doesn't cover a source, e.g. with `--ip-forward` making FORWARD's policy DROP.
pub(crate) fn block_rules(block: Block) -> Vec<RuleChange> {
    let client = format!("{CLIENT_IP}/32");
    let spec = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    match block {
        Block::None => Vec::new(),
        Block::Drop => vec![RuleChange::Rule {
            chain: "DOCKER-USER",
            spec: spec(&["-s", &client, "-j", "DROP"]),
        }],
        Block::Reject => vec![RuleChange::Rule {
            chain: "DOCKER-USER",
            spec: spec(&[
                "-s",
                &client,
                "-p",
                "tcp",
                "-j",
                "REJECT",
                "--reject-with",
                "tcp-reset",
            ]),
        }],
        Block::PolicyDrop => vec![
            RuleChange::ForwardPolicyDrop,
            RuleChange::Rule {
                chain: "DOCKER",
                spec: spec(&["-s", &client, "-j", "RETURN"]),
            },
        ],
    }
}

/// The iptables arguments that apply (or undo) one change.
pub(crate) fn change_args(change: &RuleChange, apply: bool) -> Vec<String> {
    match (change, apply) {
        (RuleChange::Rule { chain, spec }, true) => {
            let mut args = vec!["-I".to_string(), chain.to_string(), "1".to_string()];
            args.extend(spec.iter().cloned());
            args
        }
        (RuleChange::Rule { chain, spec }, false) => {
            let mut args = vec!["-D".to_string(), chain.to_string()];
            args.extend(spec.iter().cloned());
            args
        }
        (RuleChange::ForwardPolicyDrop, true) => vec!["-P".into(), "FORWARD".into(), "DROP".into()],
        (RuleChange::ForwardPolicyDrop, false) => {
            vec!["-P".into(), "FORWARD".into(), "ACCEPT".into()]
        }
    }
}

#[cfg(test)]
mod rule_tests {
    use super::*;

    #[test]
    fn drop_rule_is_the_incident_rule() {
        let changes = block_rules(Block::Drop);
        assert_eq!(
            change_args(&changes[0], true).join(" "),
            "-I DOCKER-USER 1 -s 192.0.2.9/32 -j DROP"
        );
        assert_eq!(
            change_args(&changes[0], false).join(" "),
            "-D DOCKER-USER -s 192.0.2.9/32 -j DROP"
        );
    }

    #[test]
    fn emulated_rules_publish_8092() {
        let rules = docker_rules();
        assert!(rules.contains("--dport 8092 -j DNAT --to-destination 198.51.100.2:80"));
        assert!(rules.contains("-A FORWARD -j DOCKER-USER"));
    }
}
