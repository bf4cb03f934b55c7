//! The facts a diagnosis may name, as a closed set: a `{placeholder}` in a
//! cause's message or advice must be one of these (a unit test walks every
//! cause), and a value is set only through this type.
use std::collections::BTreeMap;

macro_rules! facts {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)*) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Fact { $($(#[$doc])* $variant,)* }

        impl Fact {
            pub const ALL: &'static [Fact] = &[$(Fact::$variant,)*];

            pub const fn name(self) -> &'static str {
                match self { $(Fact::$variant => $name,)* }
            }

            pub fn from_name(name: &str) -> Option<Fact> {
                match name { $($name => Some(Fact::$variant),)* _ => None }
            }
        }
    };
}

facts! {
    Client = "client",
    Target = "target",
    Proto = "proto",
    FinalAddr = "final_addr",
    FinalPort = "final_port",
    Where = "where",
    Ifname = "ifname",
    Hook = "hook",
    Reason = "reason",
    Location = "location",
    LastHop = "last_hop",
    LastPlace = "last_place",
    NoSocketAnswer = "no_socket_answer",
    L3 = "l3",
    FwFamily = "fw_family",
    PublishedNote = "published_note",
    RulePhrase = "rule_phrase",
    AtRule = "at_rule",
    Chain = "chain",
    Table = "table",
    Family = "family",
    Tool = "tool",
    Manager = "manager",
    ManagerNote = "manager_note",
    Index = "index",
    DockerUserIndex = "docker_user_index",
    Handle = "handle",
    Zone = "zone",
    /// A firewalld policy (traffic between zones).
    Policy = "policy",
    /// A Proxmox guest's id, from its firewall chain.
    GuestId = "guest_id",
    RejectWord = "reject_word",
    RejectReply = "reject_reply",
    RejectErrno = "reject_errno",
    Icmp = "icmp",
    Quoted = "quoted",
    /// `in namespace X` for a command run where the packet died, empty on the host.
    RunIn = "run_in",
    /// The narrowest accept for this flow, in the deciding table's syntax.
    FlowMatch = "flow_match",
    /// The original destination port before DNAT (what the client asked for).
    OrigPort = "orig_port",
    OrigAddr = "orig_addr",
    /// The set a rule looked the client up in, and the element that matched.
    SetName = "set_name",
    SetElement = "set_element",
    /// Sockets bound to the port on other addresses only.
    OtherListeners = "other_listeners",
    /// The UDP socket a datagram was queued to.
    UdpSocket = "udp_socket",
    /// A listener's accept queue, "N connections waiting".
    AcceptQueue = "accept_queue",
    /// Counters that rose, as evidence: "TcpExt.ListenOverflows +3".
    CountersRose = "counters_rose",
    ConntrackCount = "conntrack_count",
    ConntrackMax = "conntrack_max",
    ConntrackMaxNew = "conntrack_max_new",
    /// The neighbour nobody answered for, and its device.
    Neighbour = "neighbour",
    NeighDevice = "neigh_device",
    /// What the neighbour table says of it: " holds it as FAILED".
    NeighState = "neigh_state",
    /// Hairpin NAT: the LAN both ends share, and the device it loops on.
    HairpinNet = "hairpin_net",
    HairpinDev = "hairpin_dev",
    /// The `nft` command that masquerades this flow, where nftables' own
    /// syntax writes the router's rules.
    NatNft = "nat_nft",
    /// A BPF program attached outside netfilter (tc or XDP) that dropped it.
    ProgName = "prog_name",
    ProgId = "prog_id",
    /// `tc ingress`, `XDP (generic)`, …
    ProgHook = "prog_hook",
    ProgDev = "prog_dev",
    /// The program named for the drop, "the tc ingress BPF program NAME (id
    /// N)", or, with several filters on the hook, all of them.
    ProgWhich = "prog_which",
    /// A tc filter ahead of the program that lets this flow alone pass.
    ProgBypass = "prog_bypass",
    /// Taking the program off its device.
    ProgRemove = "prog_remove",
    /// The packet's length, and what it did not fit: "the 1400-byte MTU of
    /// r0", or the next link's MTU when the route is not known.
    PktLen = "pkt_len",
    MtuPhrase = "mtu_phrase",
    /// Whose packets an ICMP error is about (the quoted packet's sender).
    QuotedSender = "quoted_sender",
    /// ICMP fragmentation-needed (ICMPv6 packet-too-big) as iptables and nft match it.
    IcmpMatchIpt = "icmp_match_ipt",
    IcmpMatchNft = "icmp_match_nft",
    /// What tells a sender the path's MTU: ICMP fragmentation-needed, or
    /// ICMPv6 packet-too-big.
    TooBigIcmp = "too_big_icmp",
    /// Policy routing: the `ip rule` that took the packet, its table, and
    /// what that table does with it (`blackhole`, `unreachable`, `no route`).
    PolicyRule = "policy_rule",
    PolicyTable = "policy_table",
    PolicyVerdict = "policy_verdict",
    /// Empty when the rule surely took the packet; else why it is only likely.
    PolicyHedge = "policy_hedge",
    /// A route in the main table that discards the destination, as `ip
    /// route` names it: "prohibit 198.51.100.2".
    DiscardRoute = "discard_route",
    /// A route to the destination through the neighbour that holds it.
    RouteTo = "route_to",
    /// The namespace that holds the destination address.
    Owner = "owner",
    /// A route back to the client through the hop the request came from.
    RouteBack = "route_back",
    /// A stale conntrack entry: its original direction, the DNAT rule it
    /// predates, and the command that deletes this entry alone.
    CtEntry = "ct_entry",
    NatRule = "nat_rule",
    CtDelete = "ct_delete",
    /// Where the route back to the client leaves, for reverse-path filtering:
    /// "the route back to C leaves by r0, not r2".
    RouteBackDev = "route_back_dev",
    /// Why conntrack found a packet INVALID, from its table and settings.
    InvalidWhy = "invalid_why",
    /// A router that forwarded the request without masquerading it: where,
    /// `in namespace R` for its command, the client's network there, the
    /// device the request left by, its iptables, and the request's flow as
    /// iptables matches it.
    Router = "router",
    RouterRunIn = "router_run_in",
    MasqNet = "masq_net",
    MasqDev = "masq_dev",
    MasqTool = "masq_tool",
    MasqFlow = "masq_flow",
    /// A NAT clash: the flow as NAT left it, the entry that already holds
    /// that tuple, the endpoint both were mapped to, the NAT rule that
    /// mapped it (in words), and masquerade for this flow ahead of it.
    ClashTuple = "clash_tuple",
    ClashHolder = "clash_holder",
    ClashTo = "clash_to",
    ClashRule = "clash_rule",
    ClashFix = "clash_fix",
}

/// Values for some facts; a template naming one without a value is not used.
#[derive(Clone, Debug, Default)]
pub struct Values(BTreeMap<Fact, String>);

impl Values {
    pub fn set(&mut self, f: Fact, v: impl Into<String>) {
        self.0.insert(f, v.into());
    }

    pub fn get(&self, f: Fact) -> Option<&str> {
        self.0.get(&f).map(String::as_str)
    }

    pub fn has(&self, f: Fact) -> bool {
        self.0.contains_key(&f)
    }
}

/// The names in `{…}` in a template.
#[cfg(test)]
pub fn placeholders(template: &str) -> impl Iterator<Item = &str> {
    template
        .split('{')
        .skip(1)
        .filter_map(|s| s.split_once('}').map(|(k, _)| k))
}

/// Fills every `{name}` from `values`; `None` when one has no value.
/// An unknown name is a programming error, caught by the unit test that
/// walks every cause; here it counts as missing.
pub fn fill(template: &str, values: &Values) -> Option<String> {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}')?;
        out.push_str(values.get(Fact::from_name(&after[..close])?)?);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Some(out)
}
