//! Rule positions (from netlink dumps) and rule text (from `nft` or
//! `iptables-nft-save`), cached per table.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::dump::{self, RuleKinds};
use super::socket::NlSocket;
use super::texts::Texts;
use super::trace::{TraceEvent, TraceKind};
use super::{family_name, NfError, RuleInfo, NFPROTO_IPV4, NFPROTO_IPV6};

/// How often a table may be listed again when a handle or chain is unknown.
const REFRESH_EVERY: Duration = Duration::from_millis(300);
const IPTABLES_TABLES: [&str; 5] = ["filter", "nat", "raw", "mangle", "security"];

#[derive(Debug, Default)]
struct ChainCache {
    hook: Option<u8>,
    handles: Vec<u64>,
}

#[derive(Debug)]
struct TableCache {
    chains: HashMap<String, ChainCache>,
    /// nft text by rule handle, of each chain listed so far.
    nft_text: HashMap<String, Texts>,
    /// When each chain's nft text was last listed.
    nft_listed: HashMap<String, Instant>,
    /// `-A CHAIN …` lines by rule handle, when iptables-nft manages the table.
    iptables: Texts,
    /// The chains `iptables` covers: a rule of theirs without an `-A` line
    /// is new, and a reason to list the table again.
    iptables_chains: HashSet<String>,
    /// When the text was listed (positions may be newer).
    at: Instant,
    /// The table's change count (see [`TraceEvent::rules_gen`]) the
    /// positions are known to include.
    gen: u64,
}

/// Rule positions and texts in one network namespace, with a cache that is
/// refreshed when a chain or handle is unknown.
#[derive(Debug)]
pub struct RuleBook {
    netns: Option<PathBuf>,
    ctl: Option<NlSocket>,
    tables: HashMap<(u8, String), TableCache>,
}

/// Maps rule handles to text in `nft -a` output: every rule line ends with
/// `# handle N`; table, chain and set headers end with `{ # handle N`.
pub fn parse_nft_text(out: &str) -> HashMap<u64, String> {
    out.lines()
        .filter_map(nft_line)
        .map(|(h, text)| (h, text.to_string()))
        .collect()
}

/// A rule's handle and text, from one line of `nft -a` output.
fn nft_line(line: &str) -> Option<(u64, &str)> {
    let (text, handle) = line.rsplit_once("# handle ")?;
    let text = text.trim();
    if text.ends_with('{') || text.is_empty() {
        return None;
    }
    Some((handle.trim().parse().ok()?, text))
}

/// Runs `prog args…` in `netns` and hands each line of its standard output
/// to `each` as it comes, so a long listing is never held whole.
fn each_line(
    netns: Option<&Path>,
    prog: &str,
    args: &[&str],
    mut each: impl FnMut(&str),
) -> Result<(), String> {
    use std::io::BufRead;
    let mut child = in_netns::command(netns, prog)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("{prog}: {e}"))?;
    if let Some(out) = child.stdout.take() {
        let mut out = std::io::BufReader::new(out);
        let mut line = String::new();
        while out.read_line(&mut line).map_err(|e| e.to_string())? > 0 {
            each(&line);
            line.clear();
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| format!("{prog} {}: {status}", args.join(" ")))
}

/// Groups `iptables-save` rule lines by chain, in order. None when the
/// table is one iptables-nft can't represent.
pub fn parse_iptables_save(out: &str) -> Option<HashMap<String, Vec<String>>> {
    if out.contains(INCOMPATIBLE) {
        return None;
    }
    let mut map: HashMap<String, Vec<String>> = HashMap::new();
    for line in out.lines() {
        let Some(chain) = rule_chain(line) else {
            continue;
        };
        map.entry(chain.to_string())
            .or_default()
            .push(line.to_string());
    }
    Some(map)
}

/// What `iptables-nft-save` says of a table it can't represent.
const INCOMPATIBLE: &str = "is incompatible";

/// The chain of an `iptables-save` rule line (`-A CHAIN …`).
fn rule_chain(line: &str) -> Option<&str> {
    line.strip_prefix("-A ")?.split_whitespace().next()
}

/// Whether the rules look like iptables-nft's: it adds a `counter` to every
/// rule, and `match`/`target` (xt compat) expressions or userdata to many.
fn looks_like_iptables(kinds: RuleKinds) -> bool {
    kinds.compat || kinds.all_counted
}

impl RuleBook {
    /// A rule book for the namespace at `netns` (None: the current one).
    /// Nothing is read until the first lookup.
    pub fn new(netns: Option<&Path>) -> Self {
        Self {
            netns: netns.map(Path::to_path_buf),
            ctl: None,
            tables: HashMap::new(),
        }
    }

    fn socket(&mut self) -> Result<&mut NlSocket, NfError> {
        if self.ctl.is_none() {
            let sock = in_netns::call_opt(self.netns.as_deref(), || {
                let s = NlSocket::open(false)?;
                s.set_rcv_timeout(Duration::from_secs(3))?;
                Ok::<_, NfError>(s)
            })??;
            self.ctl = Some(sock);
        }
        self.ctl
            .as_mut()
            .ok_or_else(|| NfError::Other("no netlink socket".into()))
    }

    /// The chains of a table, each with its rules' handles in order (one
    /// netlink dump: cheap), and what its rules hold.
    fn positions(
        &mut self,
        family: u8,
        table: &str,
    ) -> Result<(HashMap<String, ChainCache>, RuleKinds), NfError> {
        let sock = self.socket()?;
        let chain_recs = dump::chains(sock, family, table)?;
        let (handles, kinds) = dump::rule_handles(sock, family, table)?;
        let mut chains: HashMap<String, ChainCache> = chain_recs
            .into_iter()
            .map(|c| {
                (
                    c.name,
                    ChainCache {
                        hook: c.hook,
                        handles: Vec::new(),
                    },
                )
            })
            .collect();
        for (chain, mut handles) in handles {
            let c = chains.entry(chain).or_default();
            if c.handles.is_empty() {
                handles.shrink_to_fit();
                c.handles = handles;
            } else {
                c.handles.extend(handles);
            }
        }
        Ok((chains, kinds))
    }

    /// Positions, and text from `iptables-nft-save` for the tables
    /// iptables-nft manages (a process, slow on a loaded machine and in
    /// proportion to the table's size). nft text is listed later, chain by
    /// chain, for the rules `iptables-nft-save` leaves without text.
    fn load(&mut self, family: u8, table: &str) -> Result<TableCache, NfError> {
        let (chains, kinds) = self.positions(family, table)?;
        let iptables = if looks_like_iptables(kinds) {
            self.iptables_text(family, table, &chains)
        } else {
            Texts::default()
        };
        let iptables_chains = chains
            .iter()
            .filter(|(_, c)| c.handles.first().is_some_and(|h| iptables.contains(*h)))
            .map(|(name, _)| name.clone())
            .collect();
        Ok(TableCache {
            chains,
            nft_text: HashMap::new(),
            nft_listed: HashMap::new(),
            iptables_chains,
            iptables,
            at: Instant::now(),
            gen: 0,
        })
    }

    /// `-A CHAIN …` lines by rule handle, from `iptables-nft-save`, for a
    /// table iptables-nft manages (each chain whose rule count matches),
    /// read as the listing streams and kept deflated.
    fn iptables_text(
        &self,
        family: u8,
        table: &str,
        chains: &HashMap<String, ChainCache>,
    ) -> Texts {
        let save = match family {
            NFPROTO_IPV4 => "iptables-nft-save",
            NFPROTO_IPV6 => "ip6tables-nft-save",
            _ => return Texts::default(),
        };
        if !IPTABLES_TABLES.contains(&table) {
            return Texts::default();
        }
        let mut texts = Texts::default();
        // Lines seen per chain: the nth line of a chain is its nth rule.
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut incompatible = false;
        let listed = each_line(self.netns.as_deref(), save, &["-t", table], |line| {
            incompatible |= line.contains(INCOMPATIBLE);
            let Some(chain) = rule_chain(line) else {
                return;
            };
            let Some(c) = chains.get(chain) else { return };
            let n = seen.entry(chain.to_string()).or_default();
            if let Some(&h) = c.handles.get(*n) {
                texts.push(h, line);
            }
            *n += 1;
        });
        if let Err(e) = listed {
            log::debug!("netfilter: {e}");
            return Texts::default();
        }
        if incompatible {
            return Texts::default();
        }
        let mut texts = texts.finish();
        // A chain whose line count differs from its rule count changed
        // between the two listings: none of its lines is trusted.
        let off: std::collections::HashSet<u64> = seen
            .iter()
            .filter_map(|(name, n)| chains.get(name).filter(|c| c.handles.len() != *n))
            .flat_map(|c| c.handles.iter().copied())
            .collect();
        texts.forget(&off);
        texts
    }

    /// The cached table, listed again when it changed after the listing
    /// (its change count passed `gen`), or when `need` says the cache lacks
    /// something and it wasn't listed in the last moment.
    fn table(
        &mut self,
        family: u8,
        table: &str,
        gen: u64,
        need: impl Fn(&TableCache) -> bool,
    ) -> Option<&TableCache> {
        let key = (family, table.to_string());
        // After a change, positions are listed again (cheap); the text of
        // a rule stays what it was, so only new rules need it listed.
        if self.tables.get(&key).is_some_and(|c| c.gen < gen) {
            match self.positions(family, table) {
                Ok((chains, _)) => {
                    if let Some(c) = self.tables.get_mut(&key) {
                        c.chains = chains;
                        c.gen = gen;
                    }
                }
                Err(e) => {
                    log::warn!("netfilter: listing {} {table}: {e}", family_name(family));
                    return None;
                }
            }
        }
        let stale = match self.tables.get(&key) {
            None => true,
            Some(c) => need(c) && c.at.elapsed() >= REFRESH_EVERY,
        };
        if stale {
            match self.load(family, table) {
                Ok(mut c) => {
                    c.gen = gen;
                    self.tables.insert(key.clone(), c);
                }
                Err(e) => {
                    log::warn!("netfilter: listing {} {table}: {e}", family_name(family));
                    return None;
                }
            }
        }
        self.tables.get(&key)
    }

    /// 1-based index and text of rule `handle` in family/table/chain, in
    /// the table as it was after its `gen`th change.
    pub fn rule(
        &mut self,
        family: u8,
        table: &str,
        chain: &str,
        handle: u64,
        gen: u64,
    ) -> Option<RuleInfo> {
        let missing = |c: &TableCache| {
            c.chains
                .get(chain)
                .is_none_or(|ch| !ch.handles.contains(&handle))
                || (c.iptables_chains.contains(chain) && !c.iptables.contains(handle))
        };
        let cache = self.table(family, table, gen, missing)?;
        let handles = &cache.chains.get(chain)?.handles;
        let pos = handles.iter().position(|h| *h == handle)?;
        let index = u32::try_from(pos + 1).ok()?;
        if let Some(line) = cache.iptables.get(handle) {
            return Some(RuleInfo {
                index,
                text: line,
                iptables: true,
            });
        }
        let text = self
            .nft_text(family, table, chain, handle)
            .unwrap_or_else(|| format!("# handle {handle}"));
        Some(RuleInfo {
            index,
            text,
            iptables: false,
        })
    }

    /// The nft text of rule `handle`, listing its chain (`nft -a -s list
    /// chain`) when the text is unknown and the chain wasn't listed in the
    /// last moment.
    fn nft_text(&mut self, family: u8, table: &str, chain: &str, handle: u64) -> Option<String> {
        let cache = self.tables.get_mut(&(family, table.to_string()))?;
        if let Some(text) = cache.nft_text.get(chain).and_then(|t| t.get(handle)) {
            return Some(text);
        }
        if cache
            .nft_listed
            .get(chain)
            .is_some_and(|at| at.elapsed() < REFRESH_EVERY)
        {
            return None;
        }
        let fam = family_name(family);
        let args = ["-a", "-s", "list", "chain", fam, table, chain];
        let mut texts = Texts::default();
        let listed = each_line(self.netns.as_deref(), "nft", &args, |line| {
            if let Some((h, text)) = nft_line(line) {
                texts.push(h, text);
            }
        });
        if let Err(e) = listed {
            log::debug!("netfilter: rule text of {fam} {table} {chain}: {e}");
        }
        let texts = texts.finish();
        let text = texts.get(handle);
        if !texts.is_empty() {
            cache.nft_text.insert(chain.to_string(), texts);
        }
        cache.nft_listed.insert(chain.to_string(), Instant::now());
        text
    }

    /// Hook of a base chain (NF_INET_*), or None for a regular chain.
    pub fn chain_hook(&mut self, family: u8, table: &str, chain: &str, gen: u64) -> Option<u8> {
        let cache = self.table(family, table, gen, |c| !c.chains.contains_key(chain))?;
        cache.chains.get(chain)?.hook
    }

    /// Fills `ev.rule` (for rule events) and `ev.hook` (when unknown).
    pub fn annotate(&mut self, ev: &mut TraceEvent) {
        if ev.hook.is_none() {
            ev.hook = self.chain_hook(ev.family, &ev.table, &ev.chain, ev.rules_gen);
        }
        if let (TraceKind::Rule, Some(h), None) = (ev.kind, ev.rule_handle, &ev.rule) {
            ev.rule = self.rule(ev.family, &ev.table, &ev.chain, h, ev.rules_gen);
        }
    }
}
