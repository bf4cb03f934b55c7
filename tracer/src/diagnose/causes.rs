//! The known causes, as data: condition → message → advice.
use super::Facts;
use crate::track::FateKind;

/// When a cause applies. Conditions look only at [`Facts`].
#[derive(Clone, Copy, Debug)]
pub enum Condition {
    /// Dropped, and the deciding rule's text contains this.
    RuleSays(&'static str),
    /// Dropped by a rule (not a policy).
    RuleDrop,
    /// Dropped by a chain's policy.
    PolicyDrop,
    /// Dropped with one of these kernel reasons.
    Reason(&'static [&'static str]),
    /// Dropped for an address error where forwarding is off.
    ForwardingOff,
    /// Vanished right after arriving, as TCP segments of a known connection do.
    SilentTcp,
    Fate(FateKind),
}

impl Condition {
    pub fn holds(&self, f: &Facts) -> bool {
        let dropped = f.fate == FateKind::Dropped;
        match *self {
            Self::RuleSays(s) => {
                dropped
                    && f.rule.as_ref().is_some_and(|r| {
                        !r.policy && r.text.as_deref().is_some_and(|t| t.contains(s))
                    })
            }
            Self::RuleDrop => dropped && f.rule.as_ref().is_some_and(|r| !r.policy),
            Self::PolicyDrop => dropped && f.rule.as_ref().is_some_and(|r| r.policy),
            Self::Reason(rs) => dropped && f.reason.as_deref().is_some_and(|r| rs.contains(&r)),
            Self::ForwardingOff => dropped && f.forwarding == Some(false),
            Self::SilentTcp => f.fate == FateKind::Unknown && f.silent_tcp,
            Self::Fate(k) => f.fate == k,
        }
    }
}

pub struct Cause {
    pub id: &'static str,
    pub when: Condition,
    pub message: &'static str,
    pub advice: &'static str,
}

/// Checked in order; the first that holds wins.
pub const CAUSES: &[Cause] = &[
    Cause {
        id: "conntrack_invalid",
        when: Condition::RuleSays("INVALID"),
        message: "{client}'s packet to {target} was dropped in {hook} ({where}) because conntrack marked it INVALID; {rule_phrase}",
        advice: "conntrack saw no matching connection: look for asymmetric routing (replies taking another path), a flushed or full conntrack table (conntrack -S), or TCP window tracking (net.netfilter.nf_conntrack_tcp_loose).",
    },
    Cause {
        id: "reject",
        when: Condition::RuleSays("REJECT"),
        message: "refused: {client}'s packet to {target} was rejected in {hook} ({where}) by {rule_phrase}",
        advice: "The client sees \"connection refused\". Delete that rule ({delete_cmd}), or insert an ACCEPT for {client} before it ({insert_cmd}).",
    },
    Cause {
        id: "rule_drop",
        when: Condition::RuleDrop,
        message: "{client}'s packet to {target} was dropped in {hook} ({where}) by {rule_phrase}",
        advice: "The client times out. Delete that rule ({delete_cmd}), or insert an ACCEPT for {client} before it ({insert_cmd}).",
    },
    Cause {
        id: "policy_drop",
        when: Condition::PolicyDrop,
        message: "{client}'s packet to {target} reached the end of chain {chain} (table {table}, {hook}, {where}) without an accepting rule, and the chain's policy dropped it",
        advice: "Add a rule that accepts this traffic to chain {chain}, e.g. iptables -t {table} -I {chain} -s {client} -d {final_addr} -p {proto} --dport {final_port} -j ACCEPT, or change the policy.",
    },
    Cause {
        id: "netfilter_drop",
        when: Condition::Reason(&["NETFILTER_DROP"]),
        message: "{client}'s packet to {target} was dropped by the firewall in {hook} ({where})",
        advice: "Run pathtrace with --netns for that namespace (or as root in it) to see the exact rule.",
    },
    Cause {
        id: "no_socket",
        when: Condition::Reason(&["NO_SOCKET"]),
        message: "refused: nothing listens on {proto} port {final_port} in {where}{published_note}; the kernel answered {client} with a reset",
        advice: "Start the service in {where}, or fix the port mapping so it points at a port something listens on.",
    },
    Cause {
        id: "rp_filter",
        when: Condition::Reason(&["IP_RPFILTER"]),
        message: "{client}'s packet was dropped by reverse-path filtering on {ifname} ({where}): the route back to {client} does not go out of {ifname}",
        advice: "Fix the routing so replies to {client} leave through {ifname}, or relax the check: sysctl -w net.ipv4.conf.{ifname}.rp_filter=2 (loose) in {where}.",
    },
    Cause {
        id: "forwarding_disabled",
        when: Condition::ForwardingOff,
        message: "{client}'s packet to {target} had to be forwarded by {where}, but IP forwarding is off there",
        advice: "Enable forwarding in {where}: sysctl -w net.ipv4.ip_forward=1 (Docker normally does this).",
    },
    Cause {
        id: "no_route",
        when: Condition::Reason(&["IP_INNOROUTES", "IP_OUTNOROUTES", "IP_INADDRERRORS"]),
        message: "{where} has no route for {client}'s packet to {final_addr}",
        advice: "Add a route to {final_addr} in {where} (ip route), or check the destination address.",
    },
    Cause {
        id: "tcp_consumed",
        when: Condition::SilentTcp,
        message: "{client}'s TCP segment to {target} reached {last_place}, where the TCP stack most likely took it: established connections free segments without a tracepoint",
        advice: "",
    },
    Cause {
        id: "vanished",
        when: Condition::Fate(FateKind::Unknown),
        message: "{client}'s packet to {target} was last seen at {last_hop} and then vanished without a drop event",
        advice: "It was freed on a path without tracepoints (a TCP fast path, an offload or a qdisc), or is still queued. Trace the reply direction, or look at the next hop's counters.",
    },
    Cause {
        id: "delivered",
        when: Condition::Fate(FateKind::Delivered),
        message: "{client}'s packet to {target} was delivered to {where}",
        advice: "",
    },
    Cause {
        id: "forwarded",
        when: Condition::Fate(FateKind::Forwarded),
        message: "{client}'s packet to {target} was forwarded out of {ifname} ({where})",
        advice: "",
    },
];

/// When nothing more specific holds.
pub const FALLBACK: Cause = Cause {
    id: "dropped",
    when: Condition::Fate(FateKind::Dropped),
    message:
        "{client}'s packet to {target} was dropped in {where} on {ifname}: {reason} at {location}",
    advice: "",
};
