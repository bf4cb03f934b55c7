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
    /// An ICMPv6 error the stack handled, then freed as a drop (before 5.17).
    IcmpErrorFreedAfterUse,
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
    /// Dropped by netfilter with no rule deciding, while conntrack's
    /// table was full there (its `drop` statistic rose beyond the
    /// entries it refused, `insert_failed`, or it is at its limit).
    ConntrackFull,
    /// A SYN the kernel freed as consumed while the listener's accept
    /// queue overflowed (`TcpExt.ListenOverflows` rose).
    AcceptQueueFull,
    /// A SYN the kernel freed as consumed while the namespace found no
    /// route for its answers (`Ip.OutNoRoutes` rose).
    NoRouteBack,
    /// A UDP datagram last seen arriving where a UDP socket is bound to
    /// its address and port: queued to that socket.
    UdpSocket,
    /// No socket took it, but one is bound to the port on another address.
    ListenerElsewhere,
    /// DNATed and sent back out of the interface it came in on, source
    /// unchanged: the reply bypasses the NAT.
    Hairpin,
    /// The deciding rule matched the client's address in an nftables set.
    SetBan,
    /// Kept where it ended by a conntrack entry older than the DNAT rule
    /// that matches it now.
    StaleNat,
    /// A reply with no route back to a client that a router in front of it
    /// did not masquerade.
    MissingMasquerade,
    /// Dropped with no rule deciding while conntrack's `insert_failed`
    /// rose, NATed to a tuple an existing entry holds.
    NatClash,
    /// Dropped by routing after an `ip rule` sent it to a table of its own.
    PolicyRouted,
    /// Dropped by routing at a main-table route that discards what it
    /// matches (`blackhole`, `unreachable`, `prohibit`).
    DiscardRoute,
    /// An ICMP fragmentation-needed (ICMPv6 packet-too-big) that was dropped.
    TooBigIcmpDropped,
    /// Dropped by a BPF program attached at this hook (`tc`, `XDP`).
    Program(&'static str),
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
            Self::IcmpErrorFreedAfterUse => f.icmp_freed_after_use,
            Self::SilentRst => self::Condition::SilentTcp.holds(f) && f.tcp_flags & 0x04 != 0,
            Self::RuleDrop => dropped && f.rule.as_ref().is_some_and(|r| !r.policy),
            Self::PolicyDrop => dropped && f.rule.as_ref().is_some_and(|r| r.policy),
            Self::Reason(rs) => dropped && f.reason.as_deref().is_some_and(|r| rs.contains(&r)),
            Self::ForwardingOff => dropped && f.forwarding == Some(false),
            Self::SilentTcp => f.fate == FateKind::Unknown && f.silent_tcp,
            Self::Fate(k) => f.fate == k,
            Self::ConntrackFull => {
                dropped
                    && f.rule.is_none()
                    && f.reason.as_deref() == Some("NETFILTER_DROP")
                    && f.seen.as_ref().is_some_and(|s| {
                        // A refused entry (a clash) counts as a drop too.
                        s.rose("conntrack.drop") > s.rose("conntrack.insert_failed")
                            || s.now.conntrack.is_some_and(|(n, max)| max > 0 && n >= max)
                    })
            }
            Self::AcceptQueueFull => {
                f.fate == FateKind::Delivered
                    && f.tcp_flags & 0x12 == 0x02
                    && f.seen
                        .as_ref()
                        .is_some_and(|s| s.rose("TcpExt.ListenOverflows") > 0)
            }
            Self::ListenerElsewhere => {
                dropped
                    && f.reason.as_deref() == Some("NO_SOCKET")
                    && f.values.has(super::Fact::OtherListeners)
            }
            Self::NoRouteBack => {
                f.fate == FateKind::Delivered
                    && f.tcp_flags & 0x12 == 0x02
                    && f.seen.as_ref().is_some_and(|s| {
                        s.rose("Ip.OutNoRoutes") + s.rose("Snmp6.Ip6OutNoRoutes") > 0
                    })
            }
            Self::Hairpin => !dropped && f.hairpin.is_some(),
            Self::UdpSocket => f.fate == FateKind::Unknown && f.values.has(super::Fact::UdpSocket),
            Self::SetBan => dropped && f.set_ban.is_some(),
            Self::StaleNat => f.stale_nat.is_some(),
            Self::MissingMasquerade => f.masquerade.is_some(),
            Self::NatClash => dropped && f.rule.is_none() && f.nat_clash.is_some(),
            Self::PolicyRouted => {
                dropped && f.rule.is_none() && f.values.has(super::Fact::PolicyRule)
            }
            Self::DiscardRoute => {
                dropped && f.rule.is_none() && f.values.has(super::Fact::DiscardRoute)
            }
            Self::TooBigIcmpDropped => {
                dropped
                    && f.icmp
                        .is_some_and(|e| e.meaning() == crate::model::IcmpMeaning::TooBig)
            }
            Self::Program(hook) => {
                dropped && f.program.as_ref().is_some_and(|p| p.hook.starts_with(hook))
            }
        }
    }
}

/// Advice for one manager of the table (`None`: any), with `{placeholders}`,
/// given only where `when` holds.
pub struct Advice {
    pub by: Option<Manager>,
    pub text: &'static str,
    pub when: fn(&Facts) -> bool,
}

fn always(_: &Facts) -> bool {
    true
}

const fn any(text: &'static str) -> Advice {
    Advice {
        by: None,
        text,
        when: always,
    }
}

const fn by(m: Manager, text: &'static str) -> Advice {
    Advice {
        by: Some(m),
        text,
        when: always,
    }
}

impl Advice {
    const fn only(self, when: fn(&Facts) -> bool) -> Self {
        Self { when, ..self }
    }
}

fn names_client(f: &Facts) -> bool {
    f.rule_names_client
}

fn exact_set_element(f: &Facts) -> bool {
    f.set_ban.as_ref().is_some_and(|b| b.exact)
}

/// A cause that keeps the connection from forming, though the packet
/// itself arrived.
pub fn connection_fails(id: &str) -> bool {
    id == "hairpin_nat" || settled_fate(id) == Some(FateKind::Dropped)
}

/// The fate a cause gives a packet whose free says otherwise: lost though
/// freed as consumed (the evidence shows it), delivered to a socket though
/// no tracepoint said so, or delivered and then freed as its socket closed
/// (teardown: a drop reason, but no loss).
pub fn settled_fate(id: &str) -> Option<FateKind> {
    match id {
        "accept_queue_full" | "no_route_back" => Some(FateKind::Dropped),
        "udp_delivered" | "teardown" | "icmp_error_handled" => Some(FateKind::Delivered),
        _ => None,
    }
}

pub struct Cause {
    pub id: &'static str,
    pub when: Condition,
    pub message: &'static str,
    /// The first whose manager matches and whose placeholders all fill wins.
    pub advice: &'static [Advice],
}

/// pve-firewall rewrites its chains from its `.fw` files: the change goes
/// there, in words, and br_netfilter stays on (it is how that firewall
/// sees bridged traffic).
const PROXMOX: Advice = by(
    Manager::Proxmox,
    "pve-firewall manages chain {chain} and rewrites it whenever its configuration changes: allow this flow in guest {guest_id}'s firewall, in /etc/pve/firewall/{guest_id}.fw under [RULES] (IN ACCEPT -source {client} -p {proto} -dport {final_port}) or in the web interface (the guest → Firewall → Add); keep br_netfilter on, it is how that firewall sees bridged traffic.",
)
.only(not_outgoing);
/// A guest's or the host's outgoing chain (`tap101i0-OUT`, `PVEFW-HOST-OUT`):
/// the guest (or host) is the one sending.
const PROXMOX_OUT: Advice = by(
    Manager::Proxmox,
    "pve-firewall manages chain {chain} and rewrites it whenever its configuration changes: this is guest {guest_id}'s outgoing traffic, so allow it in /etc/pve/firewall/{guest_id}.fw under [RULES] (OUT ACCEPT -dest {final_addr} -p {proto} -dport {final_port}) or in the web interface (the guest → Firewall → Add, direction out); keep br_netfilter on, it is how that firewall sees bridged traffic.",
)
.only(outgoing);
const PROXMOX_HOST: Advice = by(
    Manager::Proxmox,
    "pve-firewall manages chain {chain} and rewrites it whenever its configuration changes: allow this flow in the datacenter's or the node's firewall (/etc/pve/firewall/cluster.fw or /etc/pve/nodes/NODE/host.fw, [RULES]: IN ACCEPT -source {client} -p {proto} -dport {final_port}); keep br_netfilter on, it is how that firewall sees bridged traffic.",
)
.only(not_outgoing);
const PROXMOX_HOST_OUT: Advice = by(
    Manager::Proxmox,
    "pve-firewall manages chain {chain} and rewrites it whenever its configuration changes: this is the host's outgoing traffic, so allow it in the node's firewall (/etc/pve/nodes/NODE/host.fw, [RULES]: OUT ACCEPT -dest {final_addr} -p {proto} -dport {final_port}); keep br_netfilter on, it is how that firewall sees bridged traffic.",
)
.only(outgoing);

/// The deciding chain filters what its guest or host sends (`…-OUT`).
fn outgoing(f: &Facts) -> bool {
    f.get(super::Fact::Chain)
        .is_some_and(|c| c.ends_with("-OUT"))
}

fn not_outgoing(f: &Facts) -> bool {
    !outgoing(f)
}

fn v6(f: &Facts) -> bool {
    f.get(super::Fact::L3) == Some("ip6")
}

fn not_v6(f: &Facts) -> bool {
    !v6(f)
}

fn forwarded(f: &Facts) -> bool {
    f.get(super::Fact::Hook) == Some("FORWARD")
}

fn not_forwarded(f: &Facts) -> bool {
    !forwarded(f)
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
        id: "pmtu_black_hole",
        when: Condition::TooBigIcmpDropped,
        message: "path-MTU black hole: {client}'s {icmp} about {quoted} died in {hook} ({where}){at_rule}; {quoted_sender} never learns the smaller MTU on its path, so its large packets keep dying and the connection stalls",
        advice: &[
            by(Manager::Iptables, "Accept {too_big_icmp} before that rule; it only tells senders the path's MTU{run_in}: {tool} -t {table} -I {chain} {index} {icmp_match_ipt} -j ACCEPT"),
            by(Manager::Iptables, "Accept {too_big_icmp} in that chain; it only tells senders the path's MTU{run_in}: {tool} -t {table} -I {chain} {icmp_match_ipt} -j ACCEPT"),
            by(Manager::IptablesLegacy, "Accept {too_big_icmp} before that rule; it only tells senders the path's MTU{run_in}: {tool} -t {table} -I {chain} {index} {icmp_match_ipt} -j ACCEPT"),
            by(Manager::IptablesLegacy, "Accept {too_big_icmp} in that chain; it only tells senders the path's MTU{run_in}: {tool} -t {table} -I {chain} {icmp_match_ipt} -j ACCEPT"),
            by(Manager::Nft, "Accept {too_big_icmp} before that rule; it only tells senders the path's MTU{run_in}: nft insert rule {family} {table} {chain} position {handle} {icmp_match_nft} accept"),
            by(Manager::Nft, "Accept {too_big_icmp} in that chain; it only tells senders the path's MTU{run_in}: nft insert rule {family} {table} {chain} {icmp_match_nft} accept"),
            any("Let ICMP fragmentation-needed (ICMPv6 packet-too-big) through in {where}, before what drops it: it only tells senders the path's MTU. Clamping TCP's MSS on the router with the small link also avoids it."),
        ],
    },
    Cause {
        id: "packet_too_big",
        when: Condition::Reason(&["PKT_TOO_BIG"]),
        message: "{client}'s {pkt_len}-byte packet to {target} is larger than {mtu_phrase} in {where} and may not be fragmented: {where} dropped it and sends {client} an {too_big_icmp} with that MTU; if {client}'s large packets keep dying, that ICMP never reaches it",
        advice: &[any("Nothing is wrong here if {client} lowers its packet size; if it keeps sending large ones, find where the {too_big_icmp} dies (pathtrace traces it with the flow) and let it through, or clamp TCP's MSS to the path MTU on {where}.")],
    },
    Cause {
        id: "reply_dropped",
        when: Condition::ReplyDrop,
        message: "the server answered, but its reply ({client} to {target}) died in {hook} ({where}){at_rule}",
        advice: &[
            by(Manager::Iptables, "Accept the replies of connections conntrack already knows, early in that chain{run_in}: {tool} -t {table} -I {chain} 1 -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"),
            by(Manager::IptablesLegacy, "Accept the replies of connections conntrack already knows, early in that chain{run_in}: {tool} -t {table} -I {chain} 1 -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"),
            by(Manager::Nft, "Accept the replies of connections conntrack already knows, early in that chain{run_in}: nft insert rule {family} {table} {chain} ct state established,related accept"),
            by(Manager::Docker, "Docker manages chain {chain}; accept the replies in DOCKER-USER{run_in}: {tool} -I DOCKER-USER -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"),
            by(Manager::Ufw, "ufw manages chain {chain}; its before rules accept ESTABLISHED,RELATED, so restore them in /etc/ufw/before.rules and run{run_in}: ufw reload"),
            by(Manager::Firewalld, "firewalld manages table {family} {table}; reload it to restore its established,related accept{run_in}: firewall-cmd --reload"),
            KUBE,
            any("Accept the replies of connections conntrack already knows (ESTABLISHED,RELATED) early in the {hook} chain of {where}; run pathtrace with --netns for that namespace to see the rule that dropped them."),
        ],
    },
    Cause {
        id: "conntrack_invalid",
        when: Condition::RuleSays("INVALID"),
        message: "{client}'s packet to {target} was dropped in {hook} ({where}) because conntrack marked it INVALID: {invalid_why}; {rule_phrase}",
        // No command: the packet really was invalid to conntrack, and the
        // fix is wherever its state was lost.
        advice: &[any("There is no rule to change; find out why conntrack had no state for this packet in {where}. Usual causes: replies taking another path (asymmetric routing), a conntrack table flushed or full (see conntrack -S there), or a connection older than the firewall with net.netfilter.nf_conntrack_tcp_loose=0 (mid-stream packets are not picked up).")],
    },
    Cause {
        id: "set_ban",
        when: Condition::SetBan,
        message: "{client}'s packet to {target} was dropped in {hook} ({where}): {client} is in set {set_name} as {set_element}, which {rule_phrase} bans",
        advice: &[
            any("Take {client} out of the set; the rule and the rest of the set keep banning the others{run_in}: nft delete element {family} {table} {set_name} {set_element}").only(exact_set_element),
            any("{set_element} holds other hosts too, so keep it and accept only this flow before the ban{run_in}: nft insert rule {family} {table} {chain} position {handle} {l3} saddr {client} {proto} dport {final_port} accept"),
        ],
    },
    Cause {
        id: "tc_drop",
        when: Condition::Program("tc "),
        message: "{client}'s packet to {target} was dropped by {prog_which} on {prog_dev} in {where} ({reason}), outside the firewall",
        advice: &[
            any("Keep what filters {prog_dev} ({prog_hook}) for the other flows, and let only this flow pass ahead of it{run_in}: {prog_bypass}"),
            any("Change program {prog_name} (id {prog_id}) so it passes this flow, or take it off {prog_dev} if it should not be there ({prog_remove}), which lets every flow it filters through."),
            any("Find which of the {prog_hook} programs on {prog_dev} in {where} drops this flow (bpftool prog show counts each one's runs while kernel.bpf_stats_enabled=1) and change it to pass it; taking a filter off (tc filter del dev {prog_dev} … pref P) lets every flow it filters through."),
        ],
    },
    Cause {
        id: "xdp_drop",
        when: Condition::Program("XDP"),
        message: "{client}'s packet to {target} was dropped by {prog_which} on {prog_dev} in {where}, before the kernel's network stack saw it",
        advice: &[any("XDP runs before anything that could let this flow past it: change {prog_name} (id {prog_id}) to pass it, or, if it should not be there at all, take it off {prog_dev} (every flow it filters goes with it){run_in}: {prog_remove}")],
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
            by(Manager::Iptables, "Accept this traffic in chain {chain}{run_in}: {tool} -t {table} -I {chain} -s {client} -d {final_addr} -p {proto} --dport {final_port} -j ACCEPT"),
            by(Manager::IptablesLegacy, "Accept this traffic in chain {chain}{run_in}: {tool} -t {table} -I {chain} -s {client} -d {final_addr} -p {proto} --dport {final_port} -j ACCEPT"),
            by(Manager::Nft, "Accept this traffic in chain {chain}{run_in}: nft insert rule {family} {table} {chain} {l3} saddr {client} {l3} daddr {final_addr} {proto} dport {final_port} accept"),
            by(Manager::Ufw, "ufw manages this chain (its default policy denied it){run_in}: ufw allow from {client} to any port {final_port} proto {proto}").only(not_forwarded),
            by(Manager::Ufw, "ufw manages this chain (its default routed policy denied it: this traffic is forwarded){run_in}: ufw route allow from {client} to {final_addr} port {final_port} proto {proto}").only(forwarded),
            by(Manager::Docker, "Docker manages chain {chain}; allow the traffic in DOCKER-USER{run_in}: {tool} -I DOCKER-USER -s {client} -p {proto} -m conntrack --ctorigdstport {orig_port} -j ACCEPT"),
            by(Manager::Firewalld, "firewalld manages table {family} {table}; this traffic crosses policy {policy}, so the rule goes there{run_in}: firewall-cmd --policy={policy} --add-rich-rule='rule family={fw_family} source address={client} port port={final_port} protocol={proto} accept'"),
    by(Manager::Firewalld, "firewalld manages table {family} {table}{run_in}: firewall-cmd --zone={zone} --add-rich-rule='rule family={fw_family} source address={client} port port={final_port} protocol={proto} accept'").only(not_forwarded),
    by(Manager::Firewalld, "firewalld manages table {family} {table} and filters traffic between zones with policies, where a zone's rich rule does not reach, and no policy covers this traffic yet: add one from zone {zone} (where {client} comes in) to the server's zone that accepts {client} to port {final_port}/{proto}, with --permanent (firewall-cmd --permanent --new-policy NAME; --permanent --policy NAME --add-ingress-zone {zone}; --add-egress-zone ZONE; --add-rich-rule='rule family={fw_family} source address={client} port port={final_port} protocol={proto} accept'), then firewall-cmd --reload, which also drops changes made without --permanent.").only(forwarded),
            KUBE,
            PROXMOX,
            PROXMOX_OUT,
            PROXMOX_HOST,
            PROXMOX_HOST_OUT,
        ],
    },
    Cause {
        id: "nat_clash",
        when: Condition::NatClash,
        message: "{client}'s packet to {target} was dropped in {hook} ({where}) as conntrack confirmed its new connection, with no firewall rule deciding: NAT mapped it to {clash_tuple}, a tuple conntrack entry {clash_holder} already holds, so the two connections clash and the new one is refused ({counters_rose}); the NAT rule that mapped it leaves too narrow a range to give each connection its own: {clash_rule}",
        advice: &[
            any("Keep that rule (the connection holding {clash_to} keeps it) and map this flow alone elsewhere, ahead of it: masquerade picks a free port{run_in}: {clash_fix}"),
            any("Give the NAT rule in {where} that maps onto {clash_to} a range wide enough for every connection it maps at once (a port range, or masquerade, which picks a free port), where its rules are kept; the connection that holds {clash_to} keeps it until it ends."),
        ],
    },
    Cause {
        id: "conntrack_full",
        when: Condition::ConntrackFull,
        message: "{client}'s packet to {target} was dropped in {hook} ({where}) because conntrack's table is full there ({conntrack_count} of {conntrack_max} entries; {counters_rose}): no firewall rule decided, conntrack could not track a new connection",
        advice: &[any("Raise the limit (it is the host's, shared by every namespace), on the host: sysctl -w net.netfilter.nf_conntrack_max={conntrack_max_new}")],
    },
    Cause {
        id: "stale_nat",
        when: Condition::StaleNat,
        message: "{client}'s packet to {target} belongs to conntrack entry {ct_entry} in {where}, which is older than {nat_rule}: NAT is decided at a connection's first packet, so the entry carries no DNAT and its packets stay in {where} ({reason}) instead of going where the rule sends them",
        advice: &[any("Delete this flow's entry alone (every other connection keeps its own), so that its next packet starts a new one that meets the DNAT rule{run_in}: {ct_delete}")],
    },
    Cause {
        id: "netfilter_drop",
        when: Condition::Reason(&["NETFILTER_DROP"]),
        message: "{client}'s packet to {target} was dropped by netfilter in {hook} ({where}) with no traced rule deciding",
        advice: &[any("No rule trace reached pathtrace from {where}: if it has iptables-legacy or nftables rules pathtrace could not trace, list them there (iptables-legacy-save, nft list ruleset); conntrack -S there shows drops conntrack made itself.")],
    },
    Cause {
        id: "listener_elsewhere",
        when: Condition::ListenerElsewhere,
        message: "refused: nothing listens on {final_addr}:{final_port} ({proto}) in {where}{published_note}: the service there listens on {other_listeners} only; {no_socket_answer}",
        advice: &[any("Make the service in {where} listen on {final_addr} (or on every address: 0.0.0.0, or [::] without IPV6_V6ONLY), and on the interface the packets arrive by where it binds to one (ADDRESS%INTERFACE above), in its own configuration, then restart it; no firewall change is needed.")],
    },
    Cause {
        id: "no_socket",
        when: Condition::Reason(&["NO_SOCKET"]),
        message: "refused: nothing listens on {proto} port {final_port} in {where}{published_note}; {no_socket_answer}",
        advice: &[any("Start the service in {where} on {proto} port {final_port}, or point the mapping at the port it listens on; no firewall change is needed.")],
    },
    Cause {
        id: "accept_queue_full",
        when: Condition::AcceptQueueFull,
        message: "{client}'s SYN to {target} reached a listener in {where} whose accept queue is full ({accept_queue}); the kernel discarded it without a drop reason ({counters_rose}), and the client retries until it times out",
        advice: &[any("The service in {where} is not accepting its connections (or not fast enough): check that it calls accept(); raise its listen() backlog, and net.core.somaxconn that caps it, only if it is busy rather than stuck.")],
    },
    Cause {
        id: "socket_rcvbuf_full",
        when: Condition::Reason(&["SOCKET_RCVBUFF"]),
        message: "{client}'s datagram to {target} reached its socket in {where}, but the socket's receive buffer was full, so the kernel dropped it ({reason}): the application that owns the socket is not reading fast enough, or at all",
        // No command: a bigger buffer only delays the loss when the
        // application does not read.
        advice: &[
            any("Make the application bound on {udp_socket} in {where} read its socket (it is stuck, or too slow: see Udp.RcvbufErrors in nstat there); a larger buffer (SO_RCVBUF, capped by net.core.rmem_max) helps only with bursts. No firewall change helps."),
            any("Make the application that owns the socket in {where} read it (it is stuck, or too slow: see Udp.RcvbufErrors in nstat there); a larger buffer (SO_RCVBUF, capped by net.core.rmem_max) helps only with bursts. No firewall change helps."),
        ],
    },
    Cause {
        id: "no_route_back",
        when: Condition::NoRouteBack,
        message: "{client}'s SYN to {target} reached {where}, which has no route back to {client}: it could not send its SYN-ACK and discarded the SYN without a drop reason ({counters_rose}); the client retries until it times out",
        advice: &[
            any("Give {where} a route back to {client} through the router the SYN came from (better still, a default route){run_in}: {route_back}"),
            any("Give {where} a route back to {client} (a default route through its router), or have the router in front of it masquerade the clients."),
        ],
    },
    Cause {
        id: "rp_filter",
        when: Condition::Reason(&["IP_RPFILTER"]),
        message: "{client}'s packet was dropped by reverse-path filtering on {ifname} ({where}): {route_back_dev}, so the path is asymmetric and strict mode refuses it",
        advice: &[any("Fix the routing so replies to {client} leave through {ifname}, or relax the check to loose mode{run_in}: sysctl -w net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.{ifname}.rp_filter=2")],
    },
    Cause {
        id: "policy_routing",
        when: Condition::PolicyRouted,
        message: "{where} routed {client}'s packet to {final_addr} by policy: rule {policy_rule} sends it to table {policy_table}{policy_hedge}, where it meets {policy_verdict}, and it was dropped ({reason} at {location})",
        advice: &[any("Policy routing is deliberate: if {client} should reach {final_addr}, change that rule or table {policy_table}'s route in {where} (ip rule show; ip route show table {policy_table}). No firewall change helps.")],
    },
    Cause {
        id: "discard_route",
        when: Condition::DiscardRoute,
        message: "{where} has a route for {client}'s packet to {final_addr}, and it discards it: the main table's longest match is {discard_route} ({reason} at {location})",
        // No command: such a route is set on purpose and covers every
        // client; deleting it is the owner's call.
        advice: &[any("A {discard_route} route discards every packet it matches, from every client, and is usually set on purpose: if {final_addr} should be reachable, delete or narrow it in {where} (ip route del {discard_route}), where its routes are kept. No firewall change helps.")],
    },
    Cause {
        id: "forwarding_disabled",
        when: Condition::ForwardingOff,
        message: "{client}'s packet to {target} had to be forwarded by {where}, but IP forwarding is off there",
        advice: &[
            any("Enable forwarding (Docker and routers need it){run_in}: sysctl -w net.ipv4.ip_forward=1").only(not_v6),
            any("Enable IPv6 forwarding (routers need it; the namespace then stops taking router advertisements unless accept_ra is 2){run_in}: sysctl -w net.ipv6.conf.all.forwarding=1").only(v6),
        ],
    },
    Cause {
        id: "neighbour_failed",
        when: Condition::Reason(&["NEIGH_FAILED", "NEIGH_QUEUEFULL", "NEIGH_DEAD"]),
        message: "no host answers for {neighbour} on {neigh_device}: {where} asked (ARP for IPv4, NDP for IPv6) for the next hop of {client}'s packet to {final_addr}, and its neighbour table{neigh_state} ({reason}): the neighbour is down, unplugged, or not on that link",
        advice: &[any("Check that {neighbour} is up and on the network of {neigh_device} in {where} (ip neigh show dev {neigh_device} there); fix its address, or the route that points at it. No firewall change helps.")],
    },
    Cause {
        id: "missing_masquerade",
        when: Condition::MissingMasquerade,
        message: "the server answered, but its reply to {final_addr} died in {where}, which has no route to {final_addr}: {router} forwarded the request out of {masq_dev} with its source ({final_addr}, of {masq_net}) unchanged; {router}, the last router before {where} on the request's path, knows the way back to that network and {where} does not",
        advice: &[
            any("Masquerade this flow where it leaves {router}, so that answers come back to {router} (or give {where} a route to {masq_net} through {router}){router_run_in}: {nat_nft}"),
            any("Masquerade this flow where it leaves {router}, so that answers come back to {router} (or give {where} a route to {masq_net} through {router}){router_run_in}: {masq_tool} -t nat -A POSTROUTING -s {masq_net} -o {masq_dev} {masq_flow} -j MASQUERADE"),
        ],
    },
    Cause {
        id: "no_route",
        when: Condition::Reason(super::facts::NO_ROUTE),
        message: "{where} has no route for {client}'s packet to {final_addr}",
        advice: &[
            any("{final_addr} is held by {owner}, a neighbour of {where}: route it there{run_in}: {route_to}"),
            any("Add a route to {final_addr} in {where} through the router that reaches it (ip route add {final_addr} via that router's address), or check the destination address."),
        ],
    },
    Cause {
        id: "hairpin_nat",
        when: Condition::Hairpin,
        message: "hairpin NAT: {where} sent {client}'s packet to {orig_addr}:{orig_port} on to {final_addr}:{final_port} back out of {hairpin_dev}, the interface it came in on, with its source unchanged; {final_addr} answers {client} directly on that LAN, from an address the client never called, so the client resets the answer and never connects",
        advice: &[
            any("Masquerade hairpinned traffic, so that the answer goes back through the router{run_in}: {nat_nft}"),
            any("Masquerade hairpinned traffic, so that the answer goes back through the router{run_in}: {tool} -t nat -I POSTROUTING -s {hairpin_net} -d {final_addr} -p {proto} --dport {final_port} -j MASQUERADE"),
        ],
    },
    Cause {
        id: "icmp_error_handled",
        when: Condition::IcmpErrorFreedAfterUse,
        message: "{client} answered {quoted} with {icmp}; it reached {where}, whose ICMPv6 code handled it and then freed it as kernels before 5.17 do, with no reason",
        advice: &[],
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
        id: "udp_delivered",
        when: Condition::UdpSocket,
        message: "{client}'s datagram to {target} was delivered to the UDP socket bound on {udp_socket} in {last_place}",
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

/// A rule dropped or rejected the packet. The fix accepts this flow
/// before it, in the syntax of whoever manages the chain; deleting the rule
/// is offered in words only when it names the client alone.
const ALLOW_PAST_RULE: &[Advice] = &[
    by(Manager::Iptables, "That rule bans {client} alone: delete it if the ban is no longer wanted ({tool} -t {table} -D {chain} {index}); to open only this flow, accept it before the rule{run_in}: {tool} -t {table} -I {chain} {index} -s {client} -p {proto} --dport {final_port} -j ACCEPT").only(names_client),
    by(Manager::Iptables, "That rule covers other traffic too, so keep it and accept only this flow before it{run_in}: {tool} -t {table} -I {chain} {index} -s {client} -p {proto} --dport {final_port} -j ACCEPT"),
    by(Manager::IptablesLegacy, "That rule bans {client} alone: delete it if the ban is no longer wanted ({tool} -t {table} -D {chain} {index}); to open only this flow, accept it before the rule{run_in}: {tool} -t {table} -I {chain} {index} -s {client} -p {proto} --dport {final_port} -j ACCEPT").only(names_client),
    by(Manager::IptablesLegacy, "That rule covers other traffic too, so keep it and accept only this flow before it{run_in}: {tool} -t {table} -I {chain} {index} -s {client} -p {proto} --dport {final_port} -j ACCEPT"),
    by(Manager::Nft, "That rule bans {client} alone: delete it if the ban is no longer wanted (nft delete rule {family} {table} {chain} handle {handle}); to open only this flow, accept it before the rule{run_in}: nft insert rule {family} {table} {chain} position {handle} {l3} saddr {client} {proto} dport {final_port} accept").only(names_client),
    by(Manager::Nft, "That rule covers other traffic too, so keep it and accept only this flow before it{run_in}: nft insert rule {family} {table} {chain} position {handle} {l3} saddr {client} {proto} dport {final_port} accept"),
    by(Manager::Ufw, "ufw manages chain {chain}; allow the client ahead of its rules (prepend puts it first among the rules of its IP family){run_in}: ufw prepend allow from {client} to any port {final_port} proto {proto}").only(not_forwarded),
    by(Manager::Ufw, "ufw manages chain {chain}; this traffic is forwarded, which only ufw's route rules reach, so allow it ahead of its rules{run_in}: ufw route prepend allow from {client} to {final_addr} port {final_port} proto {proto}").only(forwarded),
    by(Manager::Docker, "That rule bans {client} alone: delete it if the ban is no longer wanted ({tool} -t {table} -D DOCKER-USER {docker_user_index}); to open only this flow (published port {orig_port}), accept it before the rule{run_in}: {tool} -t {table} -I DOCKER-USER {docker_user_index} -s {client} -p {proto} -m conntrack --ctorigdstport {orig_port} -j ACCEPT").only(names_client),
    by(Manager::Docker, "That rule covers other traffic too, so keep it and accept only this flow (published port {orig_port}) before it{run_in}: {tool} -t {table} -I DOCKER-USER {docker_user_index} -s {client} -p {proto} -m conntrack --ctorigdstport {orig_port} -j ACCEPT"),
    by(Manager::Docker, "Docker manages chain {chain} and rewrites it; accept only this flow (published port {orig_port}) in DOCKER-USER, the chain it leaves to you{run_in}: {tool} -I DOCKER-USER -s {client} -p {proto} -m conntrack --ctorigdstport {orig_port} -j ACCEPT"),
    by(Manager::Firewalld, "firewalld manages table {family} {table}; this traffic crosses policy {policy}, so the rule goes there{run_in}: firewall-cmd --policy={policy} --add-rich-rule='rule family={fw_family} source address={client} port port={final_port} protocol={proto} accept'"),
    by(Manager::Firewalld, "firewalld manages table {family} {table}{run_in}: firewall-cmd --zone={zone} --add-rich-rule='rule family={fw_family} source address={client} port port={final_port} protocol={proto} accept'").only(not_forwarded),
    by(Manager::Firewalld, "firewalld manages table {family} {table} and filters traffic between zones with policies, where a zone's rich rule does not reach, and no policy covers this traffic yet: add one from zone {zone} (where {client} comes in) to the server's zone that accepts {client} to port {final_port}/{proto}, with --permanent (firewall-cmd --permanent --new-policy NAME; --permanent --policy NAME --add-ingress-zone {zone}; --add-egress-zone ZONE; --add-rich-rule='rule family={fw_family} source address={client} port port={final_port} protocol={proto} accept'), then firewall-cmd --reload, which also drops changes made without --permanent.").only(forwarded),
    PROXMOX,
    PROXMOX_OUT,
    KUBE,
    PROXMOX_HOST,
    PROXMOX_HOST_OUT,
    any("{manager_note}Keep that rule (it may cover others) and accept {client} before it, in chain {chain} of table {family} {table}."),
];

/// When nothing more specific holds.
pub const FALLBACK: Cause = Cause {
    id: "dropped",
    when: Condition::Fate(FateKind::Dropped),
    message:
        "{client}'s packet to {target} was dropped in {where} on {ifname}: {reason} at {location}",
    advice: &[],
};
