//! What a namespace's own kernel state says about a packet that died or
//! vanished there: the counters that rose while pathtrace ran (as `nstat`
//! and `conntrack -S` would show), the sockets bound, the neighbours, how
//! full conntrack is. The kernel gives no drop reason for some losses (a
//! full accept queue frees the SYN as consumed); these are then the evidence.
pub mod conntrack;
pub mod counters;
pub mod dnat_rules;
pub mod link;
pub mod neigh;
pub mod policy;
pub mod programs;
pub mod sockets;

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::mpsc,
    sync::Arc,
    time::{Duration, Instant},
};

pub use counters::Counters;
pub use neigh::Neighbour;
pub use sockets::Bound;

/// One namespace's state, read from inside it.
#[derive(Clone, Debug, Default)]
pub struct NsState {
    pub counters: Counters,
    pub bound: Vec<Bound>,
    pub neighbours: Vec<Neighbour>,
    /// conntrack's entries in this namespace, and the limit (the host's).
    pub conntrack: Option<(u64, u64)>,
}

fn net_file(name: &str) -> Option<String> {
    std::fs::read_to_string(Path::new("/proc/thread-self/net").join(name)).ok()
}

fn sysctl(name: &str) -> Option<u64> {
    std::fs::read_to_string(Path::new("/proc/sys").join(name))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn read_counters() -> Counters {
    let mut c = Counters::default();
    for f in ["snmp", "netstat", "snmp6"] {
        if let Some(t) = net_file(f) {
            if f == "snmp6" {
                c.add_snmp(&snmp6_as_pairs(&t));
            } else {
                c.add_snmp(&t);
            }
        }
    }
    if let Some(t) = net_file("stat/nf_conntrack") {
        c.add_conntrack(&t);
    }
    c
}

/// Counter baselines by namespace inode.
type Baselines = Vec<(u32, Counters)>;

/// Namespaces whose baselines are read together after the ready line.
const LATER_BATCH: usize = 32;

/// The counters of each of `namespaces`, four namespaces at a time.
fn read_baselines(namespaces: &[(u32, PathBuf)]) -> Baselines {
    let paths: Vec<&Path> = namespaces.iter().map(|(_, p)| p.as_path()).collect();
    namespaces
        .iter()
        .zip(in_netns::call_each(&paths, 4, read_counters))
        .filter_map(|((ino, _), c)| Some((*ino, c.ok()?)))
        .collect()
}

/// `/proc/net/snmp6` is `Name value` lines; as one `Ip6:` pair for [`Counters::add_snmp`].
fn snmp6_as_pairs(text: &str) -> String {
    let (names, values): (Vec<&str>, Vec<&str>) = text
        .lines()
        .filter_map(|l| l.split_once(char::is_whitespace))
        .map(|(n, v)| (n, v.trim()))
        .unzip();
    format!("Snmp6: {}\nSnmp6: {}\n", names.join(" "), values.join(" "))
}

/// What a look at a namespace reads beyond its `/proc` files: each is a
/// process to run there, so only for the packets that need it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Extras {
    /// The interface each socket is bound to (`ss`): for a packet no socket took.
    pub socket_devices: bool,
    /// The IPv6 neighbours (`ip -6 neigh`): for an IPv6 client's route back.
    pub v6_neighbours: bool,
}

impl Extras {
    /// A look that read `self` serves one that wants `other`.
    fn covers(self, other: Extras) -> bool {
        (self.socket_devices || !other.socket_devices)
            && (self.v6_neighbours || !other.v6_neighbours)
    }
}

impl NsState {
    /// The state of the namespace the calling thread is in.
    pub fn read_here(extras: Extras) -> Self {
        let mut bound = Vec::new();
        for (file, proto) in [("tcp", 6), ("tcp6", 6), ("udp", 17), ("udp6", 17)] {
            if let Some(t) = net_file(file) {
                bound.extend(sockets::parse(&t, proto));
            }
        }
        // The bound interfaces, only where ss runs (it is iproute2's).
        if extras.socket_devices {
            if let Ok(ss) = in_netns::output(None, "ss", &["-Hlntu"]) {
                sockets::add_devices(&mut bound, &sockets::parse_devices(&ss));
            }
        }
        let conntrack = sysctl("net/netfilter/nf_conntrack_count")
            .zip(sysctl("net/netfilter/nf_conntrack_max"));
        let mut neighbours = net_file("arp")
            .map(|t| neigh::parse(&t))
            .unwrap_or_default();
        if extras.v6_neighbours {
            neighbours.extend(neigh::read_v6_here());
        }
        Self {
            counters: read_counters(),
            bound,
            neighbours,
            conntrack,
        }
    }

    /// The state of the namespace at `path`; none if it can't be entered.
    pub fn read(path: &Path, extras: Extras) -> Option<Self> {
        in_netns::call(path, || Self::read_here(extras)).ok()
    }
}

/// What a namespace showed when pathtrace looked, after a packet died there.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// Counters that rose since pathtrace first looked at that namespace.
    pub rose: Counters,
    pub now: NsState,
}

impl Seen {
    pub fn rose(&self, counter: &str) -> u64 {
        self.rose.get(counter)
    }
}

/// Counter baselines per namespace, taken at start (in the background)
/// and at a namespace's first look.
pub struct Evidence {
    baselines: HashMap<u32, Counters>,
    /// Baselines still being read, a batch at a time: the namespaces on the
    /// likely path first (before the ready line), the others after it.
    arriving: Option<mpsc::Receiver<Baselines>>,
    /// The namespaces whose baselines are still being read.
    unread: HashSet<u32>,
    /// The last look at each namespace: a burst of packets dying in one
    /// place reads its state once, and shares it.
    recent: HashMap<u32, (Instant, Extras, Arc<Seen>)>,
    /// Where a destination was found, by (namespace, destination): a burst
    /// of packets with no route asks the namespaces once.
    owners: HashMap<(u32, std::net::IpAddr), (Instant, Option<Owner>)>,
    /// The NAT rules of the namespaces a stale entry was looked for in.
    pub nat: dnat_rules::DnatRules,
}

/// The namespace that holds an address, named, and the route to it when
/// it is a neighbour.
#[derive(Clone, Debug)]
pub struct Owner {
    pub place: String,
    pub route: Option<String>,
}

/// How long one look at a namespace serves the packets that follow.
const FRESH: Duration = Duration::from_millis(100);

impl Evidence {
    /// Takes the baselines of namespaces (inode, path) on a thread of its
    /// own: those of `first`, then those of `later`, [`LATER_BATCH`] at a time.
    pub fn start(first: Vec<(u32, PathBuf)>, later: Vec<(u32, PathBuf)>) -> Self {
        let unread = first.iter().chain(&later).map(|(ino, _)| *ino).collect();
        let (tx, rx) = mpsc::channel();
        let reading = std::thread::Builder::new()
            .name("pathtrace-evidence".into())
            .spawn(move || {
                if tx.send(read_baselines(&first)).is_err() {
                    return;
                }
                for batch in later.chunks(LATER_BATCH) {
                    if tx.send(read_baselines(batch)).is_err() {
                        return;
                    }
                }
            });
        Self {
            baselines: HashMap::new(),
            arriving: reading.is_ok().then_some(rx),
            unread,
            recent: HashMap::new(),
            owners: HashMap::new(),
            nat: dnat_rules::DnatRules::default(),
        }
    }

    /// No namespaces known in advance.
    pub fn empty() -> Self {
        Self::start(Vec::new(), Vec::new())
    }

    /// The owner of `dst` as seen from `netns`, found by `find` at most
    /// once a second.
    pub fn owner(
        &mut self,
        netns: u32,
        dst: std::net::IpAddr,
        find: impl FnOnce() -> Option<Owner>,
    ) -> Option<Owner> {
        const FRESH_OWNER: Duration = Duration::from_secs(1);
        if let Some((at, o)) = self.owners.get(&(netns, dst)) {
            if at.elapsed() < FRESH_OWNER {
                return o.clone();
            }
        }
        let o = find();
        self.owners
            .insert((netns, dst), (Instant::now(), o.clone()));
        o
    }

    /// Waits for the baselines of the `first` namespaces given to [`Evidence::start`].
    pub fn settle_baselines(&mut self) {
        if let Some(rx) = &self.arriving {
            match rx.recv() {
                Ok(b) => self.keep(b),
                Err(_) => {
                    self.arriving = None;
                    self.unread.clear();
                }
            }
        }
    }

    fn keep(&mut self, b: Baselines) {
        for (ino, c) in b {
            self.unread.remove(&ino);
            self.baselines.entry(ino).or_insert(c);
        }
    }

    /// Takes in the baselines read so far, and waits for `netns`'s while
    /// it is still being read.
    fn take_arrived(&mut self, netns: u32) {
        let Some(rx) = self.arriving.take() else {
            return;
        };
        loop {
            let next = if self.unread.contains(&netns) {
                rx.recv().map_err(|_| mpsc::TryRecvError::Disconnected)
            } else {
                rx.try_recv()
            };
            match next {
                Ok(b) => self.keep(b),
                Err(mpsc::TryRecvError::Empty) => {
                    self.arriving = Some(rx);
                    return;
                }
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.unread.clear();
                    return;
                }
            }
        }
    }

    /// Reads namespace `netns` (at `path`) now, with `extras`.
    pub fn look(&mut self, netns: u32, path: &Path, extras: Extras) -> Option<Arc<Seen>> {
        if let Some((at, read, seen)) = self.recent.get(&netns) {
            if at.elapsed() < FRESH && read.covers(extras) {
                return Some(Arc::clone(seen));
            }
        }
        self.take_arrived(netns);
        let now = NsState::read(path, extras)?;
        let base = self
            .baselines
            .entry(netns)
            .or_insert_with(|| now.counters.clone());
        let seen = Arc::new(Seen {
            rose: now.counters.since(base),
            now,
        });
        self.recent
            .insert(netns, (Instant::now(), extras, Arc::clone(&seen)));
        Some(seen)
    }
}
