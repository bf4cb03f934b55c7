//! Section: kernel time per dropped packet of `pathtrace drops --quiet
//! --metrics` (every drop on the host counted in the kernel by reason,
//! location, device and namespace), against a bpftrace script counting
//! `kfree_skb` by the same key and the floor (an empty program on the same
//! tracepoints). A paced UDP stream from `other` goes into a DROP rule in
//! the Docker host's INPUT chain; the figures are per packet the rule
//! dropped (its own counter), taken in rotated rounds as in `cost.rs`.
use std::{net::SocketAddrV4, time::Duration};

use anyhow::{bail, Context, Result};
use lab::Lab;
use serde::Serialize;

use crate::{
    cost::{self, ratio_of, summarize, Contender, Stream, ToolCost, Turn, Turns},
    net,
    peers::PtRun,
    stats::Summary,
    Ctx,
};

/// The UDP port the DROP rule drops (nothing else in the lab uses it).
pub const DROP_PORT: u16 = 8097;
/// The name the kernel keeps for the peer's `kfree_skb` program.
pub const PEER_PROG: &str = "kfree_skb";

/// The stream's route and the rule it dies in.
#[derive(Clone, Debug)]
pub struct Target {
    pub route: net::Route,
}

impl Target {
    /// Adds the DROP rule in the Docker host namespace.
    fn install(lab: &Lab) -> Result<Target> {
        let port = DROP_PORT.to_string();
        lab.iptables(&["-I", "INPUT", "-p", "udp", "--dport", &port, "-j", "DROP"])
            .context("adding the DROP rule")?;
        let names = lab.names();
        Ok(Target {
            route: net::Route {
                client_ns: names.other.clone(),
                server_ns: names.dock.clone(),
                target: SocketAddrV4::new(lab.addrs().host, DROP_PORT),
                listen_port: DROP_PORT,
                udp_src: None,
            },
        })
    }

    /// Packets the DROP rule has dropped so far (`iptables -L INPUT -v -x`).
    pub fn dropped(&self, lab: &Lab) -> Result<u64> {
        let out = lab
            .iptables(&["-t", "filter", "-L", "INPUT", "-v", "-x", "-n"])
            .context("reading the DROP rule's counter")?;
        let text = String::from_utf8_lossy(&out.stdout);
        dropped_in(&text, DROP_PORT)
            .with_context(|| format!("no DROP rule for udp dpt:{DROP_PORT} in:\n{text}"))
    }
}

/// The packet counter of the DROP rule for UDP port `port` in a listing.
fn dropped_in(listing: &str, port: u16) -> Option<u64> {
    let dpt = format!("dpt:{port}");
    listing
        .lines()
        .find(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.get(2) == Some(&"DROP") && w.contains(&"udp") && w.contains(&dpt.as_str())
        })
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
}

/// pathtrace's arguments: count every drop, print none, serve the counts.
pub fn args() -> Vec<String> {
    ["drops", "--quiet", "--metrics", "127.0.0.1:0"]
        .map(String::from)
        .to_vec()
}

/// The fair peer: what `drops --quiet` keeps, counted by bpftrace.
pub fn peer_script(bound: Duration) -> String {
    let secs = bound.as_secs().max(1);
    format!(
        r#"// pathtrace-bench's drops peer: drops by (reason, location, ifindex, netns inode).
BEGIN {{ printf("bpftrace: ready\n"); }}
tracepoint:skb:kfree_skb
{{
  $skb = (struct sk_buff *)args->skbaddr;
  @drops[args->reason, args->location, $skb->dev->ifindex, $skb->dev->nd_net.net->ns.inum] = count();
}}
interval:s:{secs} {{ exit(); }}
"#
    )
}

#[derive(Clone, Debug, Serialize)]
pub struct DropsCost {
    pub pps: u64,
    pub sample_secs: f64,
    /// Where `pathtrace drops` attaches (and the floor with it).
    pub attach: Vec<String>,
    pub turns: Vec<Turn>,
    pub pathtrace: ToolCost,
    pub bpftrace: Option<ToolCost>,
    pub floor: Option<ToolCost>,
    /// pathtrace ns/packet over the peer's, per round.
    pub ratio: Option<Summary>,
    pub over_floor: Option<Summary>,
    pub peer_over_floor: Option<Summary>,
}

impl DropsCost {
    pub fn markdown(&self, s: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(
            s,
            "\n## 0b. Kernel time per dropped packet (`drops`)\n\nUDP from `other` into a DROP rule in the Docker host's INPUT chain (port {DROP_PORT}), paced at {} pps for {:.0} s per turn. `pathtrace drops --quiet --metrics` (every drop counted in the kernel by reason, location, device and namespace) against a bpftrace script counting `kfree_skb` by the same key (reason, location, ifindex, netns inode) and the floor (an empty program on each of drops' tracepoints: {}), in rotated rounds; per packet the rule dropped (its counter). Other drops on the machine run the programs too.\n",
            self.pps,
            self.sample_secs,
            self.attach.join(", "),
        );
        let tools: Vec<&ToolCost> = std::iter::once(&self.pathtrace)
            .chain(self.bpftrace.iter())
            .chain(self.floor.iter())
            .collect();
        cost::markdown(
            s,
            &tools,
            &self.ratio,
            &self.over_floor,
            &self.peer_over_floor,
        );
    }
}

/// Where `pathtrace drops --quiet` attaches its programs.
fn attach_points(ctx: &mut Ctx) -> Result<Vec<String>> {
    let out = ctx.out_file("drops-attach");
    let mut run = PtRun::start(&ctx.tools, &args(), Duration::from_secs(60), out, None)?;
    let found = (|| {
        anyhow::ensure!(run.ready.is_some(), "pathtrace drops did not start");
        let held = crate::bpf::held_by(run.proc.pid)?;
        let ids: Vec<u64> = held.progs.iter().map(|p| p.id).collect();
        crate::bpf::attach_points(&ids)
    })();
    let stopped = run.finish();
    ctx.discard(&run.out);
    let found = found.with_context(|| format!("pathtrace drops: {}", run.proc.stderr_text()))?;
    stopped?;
    Ok(found)
}

pub fn run(ctx: &mut Ctx) -> Result<DropsCost> {
    let target = Target::install(ctx.lab)?;
    let before = target.dropped(ctx.lab)?;
    let probe = net::udp_run(&target.route, Duration::from_millis(200), Some(1000))
        .context("UDP into the DROP rule")?;
    if target.dropped(ctx.lab)? == before || probe.received != 0 {
        bail!(
            "the DROP rule did not drop the stream ({} sent, {} received)",
            probe.sent,
            probe.received
        );
    }
    let attach = attach_points(ctx)?;
    let pt = Contender::Drops;
    let mut who = vec![pt.clone()];
    if ctx.tools.bpftrace.is_some() {
        who.push(Contender::DropsBpftrace);
    }
    if !attach.is_empty() {
        who.push(Contender::Floor);
    }
    let s = cost::take_turns(
        ctx,
        &Turns {
            who: &who,
            stream: Stream::Dropped(target),
            floor_at: &attach,
        },
    )?;
    let (bt, floor) = (Contender::DropsBpftrace, Contender::Floor);
    let took = |c: &Contender| who.contains(c).then(|| summarize(&s.turns, &c.label()));
    Ok(DropsCost {
        pps: ctx.plan.cost_pps,
        sample_secs: ctx.plan.sample_secs,
        attach,
        pathtrace: summarize(&s.turns, &pt.label()),
        bpftrace: took(&bt),
        floor: took(&floor),
        ratio: ratio_of(&s.turns, &pt, &bt),
        over_floor: ratio_of(&s.turns, &pt, &floor),
        peer_over_floor: ratio_of(&s.turns, &bt, &floor),
        turns: s.turns,
    })
}

#[cfg(test)]
mod tests {
    use super::dropped_in;

    #[test]
    fn reads_the_drop_rules_counter() {
        let listing = "Chain INPUT (policy ACCEPT 12 packets, 900 bytes)
    pkts      bytes target     prot opt in     out     source               destination
   40000  2720000 DROP       udp  --  *      *       0.0.0.0/0            0.0.0.0/0            udp dpt:8097
       3      180 ACCEPT     udp  --  *      *       0.0.0.0/0            0.0.0.0/0            udp dpt:8098
";
        assert_eq!(dropped_in(listing, 8097), Some(40000));
        assert_eq!(dropped_in(listing, 8098), None);
    }
}
