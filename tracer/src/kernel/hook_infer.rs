//! Which netfilter hook dropped a packet, inferred from the kernel stack captured
//! at `kfree_skb`: the first recognised frame past the netfilter frames is the
//! function that ran the hook (`ip_forward` → FORWARD, ...).
//!
//! Inlining moves frames around between kernels, so this is a heuristic.

pub use crate::model::{Family, Hook};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookGuess {
    pub hook: Hook,
    pub family: Family,
    /// The frame the guess is based on, without suffixes.
    pub caller: String,
}

impl HookGuess {
    pub fn is_bridge(&self) -> bool {
        self.family == Family::Bridge
    }
}

/// How deep in the stack (innermost first) the netfilter frame must be; a frame
/// further out belongs to an unrelated, enclosing hook invocation.
const ANCHOR_WINDOW: usize = 16;
/// Unrecognised frames tolerated between the netfilter frames and the caller.
const MAX_UNKNOWN: usize = 3;

const CALLERS: &[(&str, Family, Hook)] = &[
    ("ip_rcv", Family::Ipv4, Hook::Prerouting),
    ("ip_rcv_core", Family::Ipv4, Hook::Prerouting),
    ("ip_sublist_rcv", Family::Ipv4, Hook::Prerouting),
    ("ip_list_rcv", Family::Ipv4, Hook::Prerouting),
    ("ip_local_deliver", Family::Ipv4, Hook::Input),
    ("ip_forward", Family::Ipv4, Hook::Forward),
    ("__ip_local_out", Family::Ipv4, Hook::Output),
    ("ip_local_out", Family::Ipv4, Hook::Output),
    ("raw_send_hdrinc", Family::Ipv4, Hook::Output),
    ("ip_output", Family::Ipv4, Hook::Postrouting),
    ("ip_finish_output", Family::Ipv4, Hook::Postrouting),
    ("ip_mc_output", Family::Ipv4, Hook::Postrouting),
    ("ipv6_rcv", Family::Ipv6, Hook::Prerouting),
    ("ipv6_list_rcv", Family::Ipv6, Hook::Prerouting),
    ("ip6_sublist_rcv", Family::Ipv6, Hook::Prerouting),
    ("ip6_input", Family::Ipv6, Hook::Input),
    ("ip6_forward", Family::Ipv6, Hook::Forward),
    ("__ip6_local_out", Family::Ipv6, Hook::Output),
    ("ip6_local_out", Family::Ipv6, Hook::Output),
    ("ip6_xmit", Family::Ipv6, Hook::Output),
    ("rawv6_send_hdrinc", Family::Ipv6, Hook::Output),
    ("ndisc_send_skb", Family::Ipv6, Hook::Output),
    ("mld_sendpack", Family::Ipv6, Hook::Output),
    ("igmp6_send", Family::Ipv6, Hook::Output),
    ("ip6_output", Family::Ipv6, Hook::Postrouting),
    ("ip6_finish_output", Family::Ipv6, Hook::Postrouting),
    ("arp_rcv", Family::Arp, Hook::Input),
    ("arp_xmit", Family::Arp, Hook::Output),
    ("nf_hook_bridge_pre", Family::Bridge, Hook::Prerouting),
    ("br_handle_frame", Family::Bridge, Hook::Prerouting),
    ("br_pass_frame_up", Family::Bridge, Hook::Input),
    ("__br_forward", Family::Bridge, Hook::Forward),
    ("br_forward_finish", Family::Bridge, Hook::Postrouting),
];

/// `br_nf_*` (iptables on bridged traffic) functions, by what their name contains.
const BR_NF_PARTS: &[(&str, Hook)] = &[
    ("pre_routing", Hook::Prerouting),
    ("local_in", Hook::Input),
    ("forward", Hook::Forward),
    ("local_out", Hook::Output),
    ("post_routing", Hook::Postrouting),
    ("dev_queue_xmit", Hook::Postrouting),
];

const NETFILTER_PREFIXES: &[&str] = &[
    "nf_",
    "nft_",
    "xt_",
    "ipt_",
    "ip6t_",
    "arpt_",
    "ebt_",
    "iptable_",
    "ip6table_",
    "arptable_",
    "ebtable_",
    "ipv4_conntrack",
    "ipv6_conntrack",
    "ipv4_confirm",
    "ipv6_confirm",
    "br_nf_hook_thresh",
];

/// `ip_forward.cold`, `udp_send_skb.isra.0`, `ip_rcv+0x4e` → the bare function name.
pub fn normalize_symbol(sym: &str) -> &str {
    let sym = sym.trim();
    sym.split(['.', '+', ' ', '\t']).next().unwrap_or(sym)
}

fn is_netfilter(name: &str) -> bool {
    NETFILTER_PREFIXES.iter().any(|p| name.starts_with(p))
}

fn classify(name: &str) -> Option<(Family, Hook)> {
    if let Some(&(_, family, hook)) = CALLERS.iter().find(|(n, ..)| *n == name) {
        return Some((family, hook));
    }
    let rest = name.strip_prefix("br_nf_")?;
    BR_NF_PARTS
        .iter()
        .find(|(part, _)| rest.contains(part))
        .map(|&(_, hook)| (Family::Bridge, hook))
}

/// `__br_forward` runs LOCAL_OUT instead of FORWARD for frames the bridge
/// device itself sends.
fn refine(name: &str, hook: Hook, outer: &[&str]) -> Hook {
    if name == "__br_forward" && outer.iter().take(4).any(|&n| n == "br_dev_xmit") {
        return Hook::Output;
    }
    hook
}

/// True when the innermost frames include netfilter code.
pub fn has_netfilter_frame<S: AsRef<str>>(stack: &[S]) -> bool {
    stack
        .iter()
        .take(ANCHOR_WINDOW)
        .any(|s| is_netfilter(normalize_symbol(s.as_ref())))
}

/// Infers the hook from symbol names, innermost frame first. `None` when there is
/// no netfilter frame or the function that ran the hook is not recognised.
pub fn infer<S: AsRef<str>>(stack: &[S]) -> Option<HookGuess> {
    let names: Vec<&str> = stack.iter().map(|s| normalize_symbol(s.as_ref())).collect();
    let anchor = names
        .iter()
        .take(ANCHOR_WINDOW)
        .position(|n| is_netfilter(n))?;
    let mut unknown = 0;
    for (i, &name) in names.iter().enumerate().skip(anchor) {
        if let Some((family, hook)) = classify(name) {
            return Some(HookGuess {
                hook: refine(name, hook, &names[i + 1..]),
                family,
                caller: name.to_owned(),
            });
        }
        if !is_netfilter(name) {
            unknown += 1;
            if unknown > MAX_UNKNOWN {
                return None;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stacks as the tracer sees them, innermost first, one frame per word.
    fn stack(frames: &str) -> Vec<&str> {
        frames.split_whitespace().collect()
    }

    #[test]
    fn realistic_stacks() {
        use Family::*;
        use Hook::*;
        let cases = [
            ("sk_skb_reason_drop nft_do_chain nft_do_chain_ipv4 nf_hook_slow ip_forward \
              __netif_receive_skb_one_core process_backlog", Some((Ipv4, Forward, "ip_forward"))),
            ("kfree_skb_reason nf_hook_slow ip_local_deliver ip_rcv __netif_receive_skb_one_core",
             Some((Ipv4, Input, "ip_local_deliver"))),
            ("kfree_skb_reason nf_hook_slow nf_hook_slow_list ip_sublist_rcv ip_list_rcv \
              __netif_receive_skb_list_core", Some((Ipv4, Prerouting, "ip_sublist_rcv"))),
            ("kfree_skb_reason nf_hook_slow ip_rcv __netif_receive_skb_one_core",
             Some((Ipv4, Prerouting, "ip_rcv"))),
            ("sk_skb_reason_drop nft_do_chain nft_do_chain_inet nf_hook_slow __ip_local_out \
              ip_local_out __ip_queue_xmit __tcp_transmit_skb", Some((Ipv4, Output, "__ip_local_out"))),
            ("kfree_skb_reason ipt_do_table iptable_filter_hook nf_hook_slow.cold ip_output \
              ip_send_skb udp_send_skb.isra.0", Some((Ipv4, Postrouting, "ip_output"))),
            ("kfree_skb_reason nf_hook_slow ip_finish_output.constprop.0+0x12 ip_output",
             Some((Ipv4, Postrouting, "ip_finish_output"))),
            ("kfree_skb_reason nf_hook_slow ip6_forward.cold ipv6_rcv __netif_receive_skb_one_core",
             Some((Ipv6, Forward, "ip6_forward"))),
            ("kfree_skb_reason nf_hook_slow ip6_input ipv6_rcv", Some((Ipv6, Input, "ip6_input"))),
            ("kfree_skb_reason nf_hook_slow ipv6_rcv", Some((Ipv6, Prerouting, "ipv6_rcv"))),
            ("kfree_skb_reason nf_hook_slow __ip6_local_out ip6_local_out ip6_send_skb",
             Some((Ipv6, Output, "__ip6_local_out"))),
            ("kfree_skb_reason nf_hook_slow ip6_output ip6_local_out",
             Some((Ipv6, Postrouting, "ip6_output"))),
            ("kfree_skb_reason nf_hook_slow br_nf_pre_routing nf_hook_bridge_pre br_handle_frame",
             Some((Bridge, Prerouting, "br_nf_pre_routing"))),
            ("kfree_skb_reason nf_hook_slow br_nf_hook_thresh br_nf_forward_finish \
              br_nf_forward_ip.part.0 nf_hook_slow __br_forward",
             Some((Bridge, Forward, "br_nf_forward_finish"))),
            ("kfree_skb_reason nf_hook_bridge_pre br_handle_frame __netif_receive_skb_core.constprop.0",
             Some((Bridge, Prerouting, "nf_hook_bridge_pre"))),
            ("sk_skb_reason_drop nft_do_chain nft_do_chain_bridge nf_hook_slow br_pass_frame_up \
              br_handle_frame_finish", Some((Bridge, Input, "br_pass_frame_up"))),
            ("kfree_skb_reason nf_hook_slow __br_forward br_forward br_dev_xmit dev_hard_start_xmit",
             Some((Bridge, Output, "__br_forward"))),
            ("kfree_skb_reason nf_hook_slow __br_forward br_forward br_handle_frame_finish",
             Some((Bridge, Forward, "__br_forward"))),
            ("kfree_skb_reason nf_hook_slow arp_rcv", Some((Arp, Input, "arp_rcv"))),
            ("kfree_skb_reason tcp_v4_rcv ip_protocol_deliver_rcu ip_local_deliver_finish \
              ip_local_deliver ip_rcv", None),
            ("kfree_skb_reason nf_hook_slow a b c d ip_forward", None),
            ("kfree_skb_reason nf_hook_slow a b ip_forward", Some((Ipv4, Forward, "ip_forward"))),
            ("", None),
        ];
        for (frames, expected) in cases {
            let got = infer(&stack(frames)).map(|g| (g.family, g.hook, g.caller));
            let expected = expected.map(|(f, h, c)| (f, h, c.to_owned()));
            assert_eq!(got, expected, "stack {frames}");
        }
    }

    #[test]
    fn bpf_frames_before_the_drop_are_skipped() {
        let frames = stack(
            "bpf_prog_6deef7357e7b4530_kfree_skb bpf_trace_run4 __bpf_trace_kfree_skb \
             sk_skb_reason_drop nft_do_chain nft_do_chain_ipv4 nf_hook_slow ip_forward",
        );
        assert_eq!(infer(&frames).map(|g| g.hook), Some(Hook::Forward));
    }

    #[test]
    fn netfilter_frame_detection() {
        assert!(!has_netfilter_frame(&stack(
            "kfree_skb_reason tcp_v4_rcv ip_local_deliver ip_rcv"
        )));
        assert!(has_netfilter_frame(&stack(
            "kfree_skb_reason nf_hook_slow a b c d ip_forward"
        )));
        let mut deep = vec!["frame"; ANCHOR_WINDOW];
        deep.extend(["nf_hook_slow", "ip_forward"]);
        assert!(!has_netfilter_frame(&deep));
        assert_eq!(infer(&deep), None);
    }

    #[test]
    fn symbol_suffixes_are_stripped() {
        assert_eq!(normalize_symbol("ip_forward.cold"), "ip_forward");
        assert_eq!(normalize_symbol("udp_send_skb.isra.0"), "udp_send_skb");
        assert_eq!(
            normalize_symbol("ip_rcv_finish.constprop.0"),
            "ip_rcv_finish"
        );
        assert_eq!(normalize_symbol("ip_rcv+0x4e/0x100"), "ip_rcv");
        assert_eq!(normalize_symbol(" nf_hook_slow "), "nf_hook_slow");
        let owned = [
            String::from("nf_hook_slow.cold"),
            String::from("ip_local_deliver.part.0"),
        ];
        let guess = infer(&owned).map(|g| (g.hook, g.is_bridge()));
        assert_eq!(guess, Some((Hook::Input, false)));
    }
}
