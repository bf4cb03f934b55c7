//! The known causes, as data: condition → message → advice.
use super::{Facts, Manager};
use crate::track::FateKind;

/// When a cause applies. Conditions look only at [`Facts`].
#[derive(Clone, Copy, Debug)]
pub enum Condition {
    /// Dropped, and the deciding rule's text contains this.
    RuleSays(&'static str),
    /// Dropped by a rule (not a policy).
    RuleDrop,
    /// A reply (the server's answer) dropped by a rule or a policy.
    ReplyDrop,
    /// An ICMP or ICMPv6 error that was not dropped.
    IcmpError,
    /// A TCP reset that reached a host and vanished there, as resets do.
    SilentRst,
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
                        !r.policy
                            && r.text.as_deref().is_some_and(|t| {
                                t.to_ascii_lowercase().contains(&s.to_ascii_lowercase())
                            })
                    })
            }
            Self::ReplyDrop => {
                dropped
                    && f.reply
                    && (f.rule.is_some() || f.reason.as_deref() == Some("NETFILTER_DROP"))
            }
            Self::IcmpError => !dropped && f.icmp.is_some(),
            Self::SilentRst => self::Condition::SilentTcp.holds(f) && f.tcp_flags & 0x04 != 0,
            Self::RuleDrop => dropped && f.rule.as_ref().is_some_and(|r| !r.policy),
            Self::PolicyDrop => dropped && f.rule.as_ref().is_some_and(|r| r.policy),
            Self::Reason(rs) => dropped && f.reason.as_deref().is_some_and(|r| rs.contains(&r)),
            Self::ForwardingOff => dropped && f.forwarding == Some(false),
            Self::SilentTcp => f.fate == FateKind::Unknown && f.silent_tcp,
            Self::Fate(k) => f.fate == k,
        }
    }
}

/// Advice for one manager of the table (`None`: any), with `{placeholders}`.
pub struct Advice {
    pub by: Option<Manager>,
    pub text: &'static str,
}

const fn any(text: &'static str) -> Advice {
    Advice { by: None, text }
}

const fn by(m: Manager, text: &'static str) -> Advice {
    Advice { by: Some(m), text }
}

pub struct Cause {
    pub id: &'static str,
    pub when: Condition,
    pub message: &'static str,
    /// The first whose manager matches and whose placeholders all fill wins.
    pub advice: &'static [Advice],
}

const KUBE: Advice = by(
    Manager::KubeProxy,
    "kube-proxy manages chain {chain} and rewrites it on every sync: fix the Service (its endpoints and ports) or the NetworkPolicy that selects it, not the rule.",
);

/// Kernel drop reasons that are a socket freeing what it held as it
/// closed: normal teardown, never a lost packet.
pub const TEARDOWN_REASONS: &[&str] = &["QUEUE_PURGE", "SOCKET_CLOSE", "TCP_CLOSE"];

/// Checked in order; the first that holds wins.
pub const CAUSES: &[Cause] = &[
    Cause {
        id: "teardown",
        when: Condition::Reason(TEARDOWN_REASONS),
        message: "{client}'s packet to {target} was freed in {where} when its socket closed: normal teardown, not a drop",
        advice: &[],
    },
    Cause {
        id: "reply_dropped",
        when: Condition::ReplyDrop,
        message: "the server answered, but its reply ({client} to {target}) died in {hook} ({where}){at_rule}",
        advice: &[
            by(Manager::Iptables, "Accept the replies of connections conntrack already knows, early in that chain: {tool} -t {table} -I {chain} 1 -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"),
            by(Manager::IptablesLegacy, "Accept the replies of connections conntrack already knows, early in that chain: {tool} -t {table} -I {chain} 1 -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"),
            by(Manager::Nft, "Accept the replies of connections conntrack already knows, early in that chain: nft insert rule {family} {table} {chain} ct state established,related accept"),
            by(Manager::Docker, "Docker manages chain {chain}; accept the replies in DOCKER-USER: {tool} -I DOCKER-USER -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"),
            by(Manager::Ufw, "ufw manages chain {chain}; its before rules accept ESTABLISHED,RELATED, so restore them in /etc/ufw/before.rules and run: ufw reload"),
            by(Manager::Firewalld, "firewalld manages table {family} {table}; reload it to restore its established,related accept: firewall-cmd --reload"),
            KUBE,
            any("Accept the replies of connections conntrack already knows (ESTABLISHED,RELATED) early in the {hook} chain of {where}; run pathtrace with --netns for that namespace to see the rule that dropped them."),
        ],
    },
    Cause {
        id: "conntrack_invalid",
        when: Condition::RuleSays("INVALID"),
        message: "{client}'s packet to {target} was dropped in {hook} ({where}) because conntrack marked it INVALID; {rule_phrase}",
        // No command: the packet really was invalid to conntrack, and the
        // fix is wherever its state was lost.
        advice: &[any("There is no rule to change; find out why conntrack had no state for this packet in {where}. Usual causes: replies taking another path (asymmetric routing), a conntrack table flushed or full (see conntrack -S there), or a connection older than the firewall with net.netfilter.nf_conntrack_tcp_loose=0 (mid-stream packets are not picked up).")],
    },
    Cause {
        id: "reject",
        when: Condition::RuleSays("REJECT"),
        message: "{reject_word}: {client}'s packet to {target} was rejected in {hook} ({where}) by {rule_phrase}; the client gets {reject_reply} ({reject_errno})",
        advice: ALLOW_PAST_RULE,
    },
    Cause {
        id: "rule_drop",
        when: Condition::RuleDrop,
        message: "{client}'s packet to {target} was dropped in {hook} ({where}) by {rule_phrase}; the client times out",
        advice: ALLOW_PAST_RULE,
    },
    Cause {
        id: "policy_drop",
        when: Condition::PolicyDrop,
        message: "{client}'s packet to {target} reached the end of chain {chain} (table {family} {table}, {hook}, {where}) without an accepting rule, and the chain's policy dropped it",
        advice: &[
            by(Manager::Iptables, "Accept this traffic in chain {chain}: {tool} -t {table} -I {chain} -s {client} -d {final_addr} -p {proto} --dport {final_port} -j ACCEPT"),
            by(Manager::IptablesLegacy, "Accept this traffic in chain {chain}: {tool} -t {table} -I {chain} -s {client} -d {final_addr} -p {proto} --dport {final_port} -j ACCEPT"),
            by(Manager::Nft, "Accept this traffic in chain {chain}: nft insert rule {family} {table} {chain} {l3} saddr {client} {l3} daddr {final_addr} {proto} dport {final_port} accept"),
            by(Manager::Ufw, "ufw manages this chain (its default policy denied it): ufw allow from {client} to any port {final_port} proto {proto}"),
            by(Manager::Docker, "Docker manages chain {chain}; allow the traffic in DOCKER-USER: {tool} -I DOCKER-USER -s {client} -d {final_addr} -p {proto} --dport {final_port} -j ACCEPT"),
            by(Manager::Firewalld, "firewalld manages table {family} {table}: firewall-cmd --zone={zone} --add-rich-rule='rule family={fw_family} source address={client} port port={final_port} protocol={proto} accept'"),
            KUBE,
        ],
    },
    Cause {
        id: "netfilter_drop",
        when: Condition::Reason(&["NETFILTER_DROP"]),
        message: "{client}'s packet to {target} was dropped by the firewall in {hook} ({where})",
        advice: &[any("Run pathtrace with --netns for that namespace (or as root in it) to see the exact rule.")],
    },
    Cause {
        id: "no_socket",
        when: Condition::Reason(&["NO_SOCKET"]),
        message: "refused: nothing listens on {proto} port {final_port} in {where}{published_note}; {no_socket_answer}",
        advice: &[any("Start the service in {where}, or fix the port mapping so it points at a port something listens on.")],
    },
    Cause {
        id: "rp_filter",
        when: Condition::Reason(&["IP_RPFILTER"]),
        message: "{client}'s packet was dropped by reverse-path filtering on {ifname} ({where}): the route back to {client} does not go out of {ifname}",
        advice: &[any("Fix the routing so replies to {client} leave through {ifname}, or relax the check: sysctl -w net.ipv4.conf.{ifname}.rp_filter=2 (loose) in {where}.")],
    },
    Cause {
        id: "forwarding_disabled",
        when: Condition::ForwardingOff,
        message: "{client}'s packet to {target} had to be forwarded by {where}, but IP forwarding is off there",
        advice: &[any("Enable forwarding in {where}: sysctl -w net.ipv4.ip_forward=1 (Docker normally does this).")],
    },
    Cause {
        id: "no_route",
        when: Condition::Reason(&["IP_INNOROUTES", "IP_OUTNOROUTES", "IP_INADDRERRORS"]),
        message: "{where} has no route for {client}'s packet to {final_addr}",
        advice: &[any("Add a route to {final_addr} in {where} (ip route), or check the destination address.")],
    },
    Cause {
        id: "icmp_error",
        when: Condition::IcmpError,
        message: "{client} answered {quoted} with {icmp}; it was last seen at {last_hop}",
        advice: &[],
    },
    Cause {
        id: "tcp_reset",
        when: Condition::SilentRst,
        message: "{client}'s TCP reset to {target} reached {last_place}, where the TCP stack took it: a reset ends the connection, or the attempt to connect, without a tracepoint",
        advice: &[],
    },
    Cause {
        id: "tcp_consumed",
        when: Condition::SilentTcp,
        message: "{client}'s TCP segment to {target} reached {last_place}, where the TCP stack most likely took it: TCP frees the segments it has processed without a tracepoint",
        advice: &[],
    },
    Cause {
        id: "vanished",
        when: Condition::Fate(FateKind::Unknown),
        message: "{client}'s packet to {target} was last seen at {last_hop} and then vanished without a drop event",
        advice: &[any("It was freed on a path without tracepoints (a TCP fast path, an offload or a qdisc), or is still queued. Trace the reply direction, or look at the next hop's counters.")],
    },
    Cause {
        id: "delivered",
        when: Condition::Fate(FateKind::Delivered),
        message: "{client}'s packet to {target} was delivered to {where}",
        advice: &[],
    },
    Cause {
        id: "forwarded",
        when: Condition::Fate(FateKind::Forwarded),
        message: "{client}'s packet to {target} was forwarded out of {ifname} ({where})",
        advice: &[],
    },
];

/// A rule dropped or rejected the packet: delete it, or accept the client
/// before it, in the syntax of whoever manages the chain.
const ALLOW_PAST_RULE: &[Advice] = &[
    by(Manager::Iptables, "Delete that rule ({tool} -t {table} -D {chain} {index}), or accept {client} before it: {tool} -t {table} -I {chain} {index} -s {client} -j ACCEPT"),
    by(Manager::IptablesLegacy, "Delete that rule ({tool} -t {table} -D {chain} {index}), or accept {client} before it: {tool} -t {table} -I {chain} {index} -s {client} -j ACCEPT"),
    by(Manager::Nft, "Delete that rule (nft delete rule {family} {table} {chain} handle {handle}), or accept {client} before it: nft insert rule {family} {table} {chain} position {handle} {l3} saddr {client} accept"),
    by(Manager::Ufw, "ufw manages chain {chain}; allow the client ahead of that rule: ufw insert 1 allow from {client} to any port {final_port} proto {proto}"),
    by(Manager::Docker, "Delete that rule ({tool} -t {table} -D DOCKER-USER {docker_user_index}), or accept {client} before it: {tool} -t {table} -I DOCKER-USER {docker_user_index} -s {client} -j ACCEPT"),
    by(Manager::Docker, "Docker manages chain {chain}; allow the client in DOCKER-USER instead: {tool} -I DOCKER-USER -s {client} -j ACCEPT"),
    by(Manager::Firewalld, "firewalld manages table {family} {table}: firewall-cmd --zone={zone} --add-rich-rule='rule family={fw_family} source address={client} port port={final_port} protocol={proto} accept'"),
    KUBE,
    any("{manager_note}Remove that rule, or accept {client} before it, in chain {chain} of table {family} {table}."),
];

/// When nothing more specific holds.
pub const FALLBACK: Cause = Cause {
    id: "dropped",
    when: Condition::Fate(FateKind::Dropped),
    message:
        "{client}'s packet to {target} was dropped in {where} on {ifname}: {reason} at {location}",
    advice: &[],
};
