//! Who left an object in the kernel: the process id plus the process's start
//! time, so that a pid the kernel has since given to another process can't
//! keep a leftover alive. Each kind of object carries the owner in its own
//! tag ([`TagKind`]); names written by older versions carry the pid alone.

use std::path::Path;

/// The process that created an object pathtrace leaves in the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat` (clock ticks after boot); `None` in
    /// tags written before start times were recorded.
    pub start: Option<u64>,
}

/// The kinds of objects pathtrace tags with its owner, each with its own
/// spelling (the characters each namespace of names allows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagKind {
    /// An unowned nftables table: `pathtrace-<pid>-<start>`.
    NftTable,
    /// The comment of an iptables-legacy TRACE rule: `pathtrace:<pid>:<start>`.
    RuleComment,
    /// A tracefs kprobe event group: `pathtrace_<pid>_<start>`.
    TracefsGroup,
}

impl TagKind {
    fn prefix(self) -> &'static str {
        match self {
            Self::NftTable => "pathtrace-",
            Self::RuleComment => "pathtrace:",
            Self::TracefsGroup => "pathtrace_",
        }
    }

    fn separator(self) -> char {
        match self {
            Self::NftTable => '-',
            Self::RuleComment => ':',
            Self::TracefsGroup => '_',
        }
    }

    /// The tag naming `owner`.
    pub fn tag(self, owner: Owner) -> String {
        match owner.start {
            Some(start) => format!("{}{}{}{start}", self.prefix(), owner.pid, self.separator()),
            None => format!("{}{}", self.prefix(), owner.pid),
        }
    }

    /// The owner a tag names, in the current or the pid-only format; `None`
    /// for anything else.
    pub fn parse(self, tag: &str) -> Option<Owner> {
        let rest = tag.strip_prefix(self.prefix())?;
        let (pid, start) = match rest.split_once(self.separator()) {
            Some((pid, start)) => (pid, Some(digits(start)?)),
            None => (rest, None),
        };
        Some(Owner {
            pid: u32::try_from(digits(pid)?).ok().filter(|&p| p > 0)?,
            start,
        })
    }
}

fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// What `/proc/<pid>/stat` tells about a process: its command name and start time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    pub comm: String,
    pub start: u64,
}

/// Parses `/proc/<pid>/stat`. The command name is in parentheses and may hold
/// spaces and parentheses itself, so fields are counted after the last `)`.
pub fn parse_stat(stat: &str) -> Option<ProcStat> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    // Field 3 (state) is the first after the name; field 22 is the 20th.
    let start = stat
        .get(close + 1..)?
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()?;
    Some(ProcStat { comm, start })
}

/// `/proc/<pid>/stat` of a running process, or `None` when there is none.
pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).ok()?;
    parse_stat(&text)
}

/// Command name of pathtrace's binary as the kernel reports it.
const COMM: &str = "pathtrace";

impl Owner {
    /// This process.
    pub fn current() -> Self {
        let pid = std::process::id();
        Self {
            pid,
            start: proc_stat(pid).map(|s| s.start),
        }
    }

    /// Whether the owner still runs, given what `/proc/<pid>/stat` says
    /// (`None`: no such process). With a start time, the process must have
    /// started then; a pid-only tag (older versions) is alive only while its
    /// pid belongs to a pathtrace.
    pub fn alive_given(self, stat: Option<&ProcStat>) -> bool {
        match (stat, self.start) {
            (None, _) => false,
            (Some(s), Some(start)) => s.start == start,
            (Some(s), None) => s.comm == COMM,
        }
    }

    /// Whether the owner still runs, checked against `/proc`.
    pub fn alive(self) -> bool {
        self.alive_given(proc_stat(self.pid).as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        let stat = "4242 (we(i)rd name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100 18446744073709551615";
        assert_eq!(
            parse_stat(stat),
            Some(ProcStat {
                comm: "we(i)rd name".into(),
                start: 987_654
            })
        );
        assert_eq!(parse_stat("12 (short) S 1 2"), None);
    }

    #[test]
    fn tags_round_trip_and_old_ones_are_recognised() {
        let o = Owner {
            pid: 77,
            start: Some(1234),
        };
        for (kind, text) in [
            (TagKind::NftTable, "pathtrace-77-1234"),
            (TagKind::RuleComment, "pathtrace:77:1234"),
            (TagKind::TracefsGroup, "pathtrace_77_1234"),
        ] {
            assert_eq!(kind.tag(o), text);
            assert_eq!(kind.parse(text), Some(o));
        }
        let old = Owner {
            pid: 12,
            start: None,
        };
        assert_eq!(TagKind::NftTable.parse("pathtrace-12"), Some(old));
        assert_eq!(TagKind::RuleComment.parse("pathtrace:12"), Some(old));
        for bad in [
            "pathtrace",
            "pathtrace-",
            "pathtrace-0",
            "pathtrace-x",
            "pathtrace-12-",
            "pathtrace-12-3-4",
            "pathtrace:12",
            "pathtraceX",
        ] {
            assert_eq!(TagKind::NftTable.parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_reused_pid_does_not_keep_an_owner_alive() {
        let run = ProcStat {
            comm: "pathtrace".into(),
            start: 500,
        };
        let other = ProcStat {
            comm: "kworker/0:1".into(),
            start: 900,
        };
        let new = Owner {
            pid: 12,
            start: Some(500),
        };
        let old = Owner {
            pid: 12,
            start: None,
        };
        assert!(new.alive_given(Some(&run)));
        assert!(!new.alive_given(Some(&other)), "same pid, later start");
        assert!(!new.alive_given(None));
        assert!(old.alive_given(Some(&run)), "a pid-only tag of a pathtrace");
        assert!(
            !old.alive_given(Some(&other)),
            "a pid-only tag of another program"
        );
        assert!(!old.alive_given(None));
    }

    #[test]
    fn this_process_is_alive() {
        let me = Owner::current();
        assert!(me.start.is_some());
        assert!(me.alive());
        let before = Owner {
            start: me.start.map(|s| s + 1),
            ..me
        };
        assert!(!before.alive());
    }
}
