//! Command-line definitions.
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{
    loader::TierRequest,
    model::{parse_expr, parse_port, Cidr, ExprError, FilterError, FlowFilter, Flows, Proto},
};

/// A value or a combination of flags the command line refuses.
#[derive(Debug, thiserror::Error)]
pub enum ArgError {
    #[error("'{0}' is not a packet count (a whole number from 1)")]
    Count(String),
    #[error("'{0}' is not a number of seconds")]
    Seconds(String),
    #[error("'{0}' is outside 0 < SECS <= 604800")]
    SecondsRange(String),
    #[error("'{0}' is shorter than 0.1 s")]
    IntervalTooShort(String),
    #[error("'{0}' is not a power of two from 4096 to 1073741824")]
    RingBytes(String),
    #[error("'{0}' is not a number from 1 to 4194304")]
    Tracked(String),
    #[error("'{0}' is not a rate (a whole number of lines per second from 1)")]
    Rate(String),
    #[error("--{name} was given {n} times; it takes one value (two are for `pathtrace compare`)")]
    OneValue { name: &'static str, n: usize },
    #[error("--{name} was given {n} times; compare takes it at most twice")]
    TwoValues { name: &'static str, n: usize },
    #[error("compare's expression needs one 'vs' with flow A's expression before it and flow B's after it")]
    Vs,
    #[error("compare needs two flows: one filter flag given twice (--src A --src B --dport 8092) or two expressions (src host A vs src host B)")]
    OneFlow,
    #[error(transparent)]
    Expr(#[from] ExprError),
    #[error(transparent)]
    Filter(#[from] FilterError),
}

/// `--tier`: the command line's names for a [`TierRequest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TierArg {
    Auto,
    Fentry,
    Kprobe,
    Tracepoint,
}

impl From<TierArg> for TierRequest {
    fn from(t: TierArg) -> Self {
        match t {
            TierArg::Auto => Self::Auto,
            TierArg::Fentry => Self::Fentry,
            TierArg::Kprobe => Self::Kprobe,
            TierArg::Tracepoint => Self::Tracepoint,
        }
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "pathtrace",
    version = concat!(env!("CARGO_PKG_VERSION"), " (git ", env!("PATHTRACE_GIT_REV"), ")"),
    about = "Follow packets through the Linux kernel: every hop, every netfilter hook, and why they die.",
    long_about = "Follow packets through the Linux kernel: every hop, every netfilter hook, and why they die.\n\n\
        With no subcommand, pathtrace traces the packets that match the filter, given \
        as flags (`sudo pathtrace --src 192.0.2.9 --dport 8092`) or as a tcpdump filter \
        expression (`sudo pathtrace 'src host 192.0.2.9 and tcp dst port 8092'`), or both \
        (then combined with `and`).",
    after_long_help = FILTER_HELP,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub trace: TraceArgs,
}

/// The grammar of filter expressions, for `--help` and the man page.
const FILTER_HELP: &str = "\
FILTER EXPRESSIONS (tcpdump's pcap-filter, the part decided in the kernel):
  host ADDR                   IPv4 or IPv6 source or destination
  net ADDR/LEN                also: net ADDR mask MASK, net 192.0.2 (a /24)
  port N, portrange LO-HI     TCP, UDP or SCTP ports
  src, dst, src or dst, src and dst
                              before host, net, port, portrange
  tcp, udp, sctp              also before port/portrange: tcp dst port 80
  icmp, icmp6, ip, ip6        ip/ip6 also before host, net, proto
  proto N, ip proto N, ip6 proto N
  and (&&), or (||), not (!), ( )
                              and/or bind equally, left to right
  An id alone repeats the qualifiers before it: port 80 or 443.
  Anything else (ether, vlan, arp, tcp[13], greater…) is refused, exit 2.
  Flags and an expression combine with `and`; compare parts two expressions
  with `vs`.

EXAMPLES:
  pathtrace 'host 192.0.2.9 and tcp port 8092'
  pathtrace 'net 192.0.2.0/24 and not host 192.0.2.9 and (port 80 or port 443)'
  pathtrace drops 'not port 22'
  pathtrace compare 'src host 192.0.2.9 vs src host 192.0.2.7' --dport 8092";

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Trace the packets that match a filter (the default).
    #[command(after_long_help = FILTER_HELP)]
    Trace(TraceArgs),
    /// Build the Docker incident in network namespaces and trace it.
    Demo(DemoArgs),
    /// Stream every packet drop on the host with its reason, or show a live top-list.
    #[command(after_long_help = FILTER_HELP)]
    Drops(DropsArgs),
    /// Trace two flows at once and show where their paths part.
    ///
    /// Give one filter flag twice: its first value is flow A's, its second
    /// flow B's (e.g. --src 192.0.2.9 --src 192.0.2.7 --dport 8092). A flag
    /// given once applies to both flows. Or give two filter expressions
    /// parted by `vs` (e.g. 'src host 192.0.2.9 vs src host 192.0.2.7'
    /// --dport 8092); one expression without `vs` applies to both flows.
    #[command(after_long_help = FILTER_HELP)]
    Compare(CompareArgs),
    /// Print shell completions.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Write the man pages and the bash, zsh and fish completions into DIR
    /// (for packaging).
    #[command(hide = true)]
    GenerateDocs {
        /// The folder to write `man/` and `completions/` into.
        dir: std::path::PathBuf,
    },
}

/// The filter flags of every command. `compare` takes each up to twice (the
/// first value for flow A, the second for flow B, once for both); the
/// others take each once.
#[derive(Args, Debug, Clone, Default)]
pub struct FilterArgs {
    /// Source address or prefix (IPv4 or IPv6), e.g. 192.0.2.9 or 2001:db8::/32.
    #[arg(long, value_name = "ADDR[/LEN]")]
    pub src: Vec<Cidr>,
    /// Destination address or prefix.
    #[arg(long, value_name = "ADDR[/LEN]")]
    pub dst: Vec<Cidr>,
    /// Source port (1-65535).
    #[arg(long, value_name = "PORT", value_parser = parse_port)]
    pub sport: Vec<u16>,
    /// Destination port (1-65535), as the packet first carries it (before DNAT).
    #[arg(long, value_name = "PORT", value_parser = parse_port)]
    pub dport: Vec<u16>,
    /// Protocol: tcp, udp, icmp, icmpv6, sctp or a number.
    #[arg(long, value_name = "PROTO")]
    pub proto: Vec<Proto>,
    /// A filter expression in tcpdump's language (pcap-filter), as one
    /// quoted argument or several words, combined with the flags by `and`:
    /// host, net (ADDR/LEN or ADDR mask MASK), port, portrange, each with
    /// src, dst, src or dst, src and dst; ip, ip6, tcp, udp, icmp, icmp6,
    /// sctp, proto N; and/&&, or/||, not/!, parentheses. `and` and `or`
    /// bind equally, left to right, as in tcpdump. For compare, `vs`
    /// parts flow A's expression from flow B's
    /// (`compare src host 192.0.2.9 vs src host 192.0.2.7`).
    #[arg(value_name = "EXPRESSION", num_args = 0..)]
    pub expression: Vec<String>,
}

impl FilterArgs {
    /// One flow: each flag at most once. `replies`: its replies are
    /// followed too.
    pub fn single(&self, replies: bool) -> Result<Flows, ArgError> {
        self.flows(1, replies)
    }

    /// Two flows for `compare`: each flag at most twice, and one of them twice.
    pub fn pair(&self, replies: bool) -> Result<Flows, ArgError> {
        self.flows(2, replies)
    }

    fn flows(&self, most: usize, replies: bool) -> Result<Flows, ArgError> {
        let mut varied = false;
        let mut pick = |name: &'static str, n: usize| -> Result<[usize; 2], ArgError> {
            match n {
                0 | 1 => Ok([0, 0]),
                2 if most == 2 => {
                    varied = true;
                    Ok([0, 1])
                }
                _ if most == 1 => Err(ArgError::OneValue { name, n }),
                _ => Err(ArgError::TwoValues { name, n }),
            }
        };
        let src = pick("src", self.src.len())?;
        let dst = pick("dst", self.dst.len())?;
        let sport = pick("sport", self.sport.len())?;
        let dport = pick("dport", self.dport.len())?;
        let proto = pick("proto", self.proto.len())?;
        let words: Vec<String> = self
            .expression
            .iter()
            .flat_map(|w| w.split_whitespace().map(str::to_owned))
            .collect();
        let exprs = match words.iter().position(|w| w == "vs") {
            Some(at) if most == 2 => {
                let (a, b) = (&words[..at], &words[at + 1..]);
                if a.is_empty() || b.is_empty() || b.iter().any(|w| w == "vs") {
                    return Err(ArgError::Vs);
                }
                varied = true;
                [parse_expr(a), parse_expr(b)]
            }
            _ => [parse_expr(&words), parse_expr(&words)],
        };
        let [ea, eb] = exprs;
        let exprs = [ea?, eb?];
        if most == 2 && !varied {
            return Err(ArgError::OneFlow);
        }
        let flows = [0, 1].map(|i| FlowFilter {
            src: self.src.get(src[i]).copied(),
            dst: self.dst.get(dst[i]).copied(),
            sport: self.sport.get(sport[i]).copied(),
            dport: self.dport.get(dport[i]).copied(),
            proto: self.proto.get(proto[i]).copied(),
            expr: exprs[i].clone(),
            both_directions: replies,
        });
        Ok(Flows::new(flows[..most].to_vec())?)
    }
}

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    #[default]
    Auto,
    Always,
    Never,
}

#[derive(Args, Debug, Clone, Default)]
pub struct OutputArgs {
    /// Print JSON Lines (`hop`, `packet` and `stats` records) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Colour: auto uses colour only on a terminal and honours NO_COLOR.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, value_name = "WHEN")]
    pub color: ColorChoice,
}

fn parse_count(s: &str) -> Result<u64, ArgError> {
    match s.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(ArgError::Count(s.to_owned())),
    }
}

fn parse_duration(s: &str) -> Result<Duration, ArgError> {
    let secs: f64 = s.parse().map_err(|_| ArgError::Seconds(s.to_owned()))?;
    if !(secs > 0.0 && secs <= 7.0 * 86400.0) {
        return Err(ArgError::SecondsRange(s.to_owned()));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// How a tracing run behaves, shared by `trace` and `compare`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub output: OutputArgs,
    /// Exit after N packets have a known fate (compare: N per flow).
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub count: Option<u64>,
    /// Exit after SECS seconds.
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Which mechanism sees netfilter verdicts: auto picks the best the kernel allows.
    #[arg(long, value_enum, default_value_t = TierArg::Auto)]
    pub tier: TierArg,
    /// Also trace firewall rules in this network namespace from the start (an
    /// `ip netns` name, a container or a path like /proc/PID/ns/net);
    /// repeatable. The current one always is, and so is each namespace with
    /// rules that a traced packet enters (unless --no-follow).
    #[arg(long, value_name = "NAME|PATH")]
    pub netns: Vec<String>,
    /// Don't trace firewall rules (no nftables trace table, no TRACE rules).
    #[arg(long)]
    pub no_rules: bool,
    /// Don't start rule tracing in the namespaces traced packets enter; only
    /// in this one and those given with --netns.
    #[arg(long)]
    pub no_follow: bool,
    /// Don't follow replies (by default the reverse direction is traced too,
    /// to tell "refused" from "timed out").
    #[arg(long)]
    pub no_replies: bool,
    /// A Docker-compatible API socket (Docker or Podman), for container names
    /// and published ports. Default: DOCKER_HOST (unix://), else the rootless
    /// Docker and Podman sockets under XDG_RUNTIME_DIR (and the sudo user's),
    /// /run/podman/podman.sock and /var/run/docker.sock.
    #[arg(long, value_name = "PATH")]
    pub docker_socket: Option<std::path::PathBuf>,
    /// Also write the followed packets to FILE as pcap-ng (`-`: standard
    /// output, text then goes to standard error): their first 128 bytes at
    /// each device hop and drop, one interface per namespace/device, and
    /// what pathtrace knows about each hop in the packet's comment.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<std::path::PathBuf>,
    /// Size of the kernel's event ring buffer in bytes (a power of two).
    /// Raise it when the exit line reports lost events.
    #[arg(long, value_name = "BYTES", default_value_t = crate::loader::DEFAULT_RING_BYTES, value_parser = parse_ring)]
    pub ring_bytes: u32,
    /// Packets the kernel follows at once; the oldest is evicted beyond that.
    /// Raise it when the exit line reports evictions.
    #[arg(long, value_name = "N", default_value_t = crate::loader::DEFAULT_TRACKED_MAX, value_parser = parse_tracked)]
    pub tracked_max: u32,
}

fn parse_ring(s: &str) -> Result<u32, ArgError> {
    match s.parse::<u32>() {
        Ok(n) if n.is_power_of_two() && (4096..=1 << 30).contains(&n) => Ok(n),
        _ => Err(ArgError::RingBytes(s.to_owned())),
    }
}

fn parse_tracked(s: &str) -> Result<u32, ArgError> {
    match s.parse::<u32>() {
        Ok(n) if (1..=1 << 22).contains(&n) => Ok(n),
        _ => Err(ArgError::Tracked(s.to_owned())),
    }
}

#[derive(Args, Debug, Clone)]
pub struct TraceArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Two flows: every filter flag may be given twice, the first value for
/// flow A and the second for flow B; a flag given once applies to both.
#[derive(Args, Debug, Clone)]
pub struct CompareArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

impl TraceArgs {
    /// The flow, or why the flags don't describe one.
    pub fn flows(&self) -> Result<Flows, ArgError> {
        self.filter.single(!self.run.no_replies)
    }
}

impl CompareArgs {
    /// The two flows, or why the flags don't describe two.
    pub fn flows(&self) -> Result<Flows, ArgError> {
        self.filter.pair(!self.run.no_replies)
    }
}

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum DockerChoice {
    /// A real dockerd when it can start, else an emulation of its chains.
    #[default]
    Auto,
    /// Require a real dockerd.
    Real,
    /// Emulate Docker's bridge, veth and chains.
    Emulated,
}

/// The topology `pathtrace demo` rebuilds.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum DemoLayout {
    /// Docker inside a guest behind a hypervisor's bridge (br_netfilter on);
    /// pathtrace runs on the hypervisor.
    #[default]
    Hypervisor,
    /// Docker on a host of the LAN; pathtrace runs on that host.
    SingleHost,
}

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    #[command(flatten)]
    pub output: OutputArgs,
    /// Where Docker runs, and where pathtrace traces from.
    #[arg(long, value_enum, default_value_t = DemoLayout::Hypervisor)]
    pub layout: DemoLayout,
    /// Use a real dockerd or an emulation of it.
    #[arg(long, value_enum, default_value_t = DockerChoice::Auto)]
    pub docker: DockerChoice,
    /// Show `pathtrace compare` of the two clients instead of the trace.
    #[arg(long)]
    pub compare: bool,
    #[arg(long, value_enum, default_value_t = TierArg::Auto)]
    pub tier: TierArg,
}

fn parse_rate(s: &str) -> Result<u32, ArgError> {
    match s.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(ArgError::Rate(s.to_owned())),
    }
}

fn parse_interval(s: &str) -> Result<Duration, ArgError> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(100) {
        return Err(ArgError::IntervalTooShort(s.to_owned()));
    }
    Ok(d)
}

#[derive(Args, Debug, Clone)]
pub struct DropsArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    /// A live table of counts and rates per (reason, location, device, namespace).
    #[arg(long)]
    pub top: bool,
    /// Refresh interval of --top, in seconds.
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_interval)]
    pub interval: Duration,
    /// Most drop lines printed per second; the rest are counted and summarised.
    #[arg(long, value_name = "N", default_value = "200", value_parser = parse_rate)]
    pub max_rate: u32,
    /// Exit after N drops (stream only).
    #[arg(long, value_name = "N", value_parser = parse_count, conflicts_with = "top")]
    pub count: Option<u64>,
    /// Exit after SECS seconds.
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Also serve the kernel's drop counts in Prometheus's text format on
    /// http://ADDR:PORT/metrics (bound to that address only) while running.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Print no drops: only count them in the kernel and serve --metrics.
    #[arg(long, requires = "metrics", conflicts_with_all = ["top", "count"])]
    pub quiet: bool,
    #[arg(long, value_enum, default_value_t = TierArg::Tracepoint, hide = true)]
    pub tier: TierArg,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, Command};

    #[test]
    fn expressions_as_one_argument_or_words_and_compare_parts_them_with_vs() {
        for args in [
            &["host 192.0.2.9 and tcp port 8092"][..],
            &["host", "192.0.2.9", "and", "tcp", "port", "8092"][..],
            &["trace", "host 192.0.2.9", "and tcp port 8092"][..],
        ] {
            let cli = parse(args);
            let filter = match &cli.command {
                Some(Command::Trace(t)) => t.flows(),
                _ => cli.trace.flows(),
            }
            .expect("one flow");
            assert_eq!(
                filter[0].to_string(),
                "host 192.0.2.9 and tcp port 8092",
                "{args:?}"
            );
        }
        let Some(Command::Compare(c)) = parse(&[
            "compare",
            "src host 192.0.2.9 vs src host 192.0.2.7",
            "--dport",
            "8092",
        ])
        .command
        else {
            panic!("compare parses as compare");
        };
        let flows = c.flows().expect("two flows");
        let [a, b] = [&flows[0], &flows[1]];
        assert_eq!(a.to_string(), "dport 8092 and (src host 192.0.2.9)");
        assert_eq!(b.to_string(), "dport 8092 and (src host 192.0.2.7)");
        let Some(Command::Compare(c)) =
            parse(&["compare", "tcp", "--src", "192.0.2.9", "--src", "192.0.2.7"]).command
        else {
            panic!("compare parses as compare");
        };
        let flows = c.flows().expect("two flows");
        let [a, b] = [&flows[0], &flows[1]];
        assert_eq!(a.to_string(), "src 192.0.2.9 and (tcp)");
        assert_eq!(b.to_string(), "src 192.0.2.7 and (tcp)");
        let Some(Command::Compare(c)) = parse(&["compare", "tcp vs"]).command else {
            panic!("compare parses as compare");
        };
        assert!(c
            .flows()
            .expect_err("one side empty")
            .to_string()
            .contains("'vs'"));
        let nothing = parse(&["--src", "192.0.2.9", "ip6"]).trace.flows();
        assert!(
            nothing
                .expect_err("refused")
                .to_string()
                .contains("matches no packet"),
            "an IPv4 source and ip6"
        );
    }

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("pathtrace").chain(args.iter().copied()))
            .expect("the flags parse")
    }

    #[test]
    fn trace_takes_each_filter_flag_once() {
        let cli = parse(&["--src", "192.0.2.9", "--dport", "8092"]);
        let flows = cli.trace.flows().expect("one flow");
        let f = &flows[0];
        assert_eq!(f.src.map(|c| c.to_string()).as_deref(), Some("192.0.2.9"));
        assert_eq!(f.dport, Some(8092));
        let twice = parse(&["--src", "192.0.2.9", "--src", "192.0.2.7"]);
        let err = twice
            .trace
            .flows()
            .expect_err("--src twice is refused")
            .to_string();
        assert!(err.starts_with("--src was given 2 times"), "{err}");
    }

    #[test]
    fn compare_splits_a_doubled_flag_and_shares_the_others() {
        let cli = parse(&[
            "compare",
            "--src",
            "192.0.2.9",
            "--src",
            "192.0.2.7",
            "--dport",
            "8092",
        ]);
        let Some(Command::Compare(args)) = cli.command else {
            panic!("compare parses as compare");
        };
        let flows = args.flows().expect("two flows");
        let [a, b] = [&flows[0], &flows[1]];
        assert_ne!(a.src, b.src);
        assert_eq!((a.dport, b.dport), (Some(8092), Some(8092)));
        assert!(a.both_directions && b.both_directions);
    }

    #[test]
    fn compare_refuses_no_doubled_flag_and_a_tripled_one() {
        for (args, want) in [
            (&["compare", "--dport", "22"][..], "compare needs two flows"),
            (
                &["compare", "--dport", "1", "--dport", "2", "--dport", "3"][..],
                "--dport was given 3 times; compare takes it at most twice",
            ),
        ] {
            let Some(Command::Compare(c)) = parse(args).command else {
                panic!("compare parses as compare");
            };
            let err = c.flows().expect_err("refused").to_string();
            assert!(err.starts_with(want), "{args:?}: {err}");
        }
    }
}
