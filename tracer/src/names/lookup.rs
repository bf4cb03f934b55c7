//! Container engines, asked on a worker thread so that neither start-up nor
//! the event reader waits for them: once at start, then again for each
//! namespace that shows up mid-trace (a guest, or a dockerd, started after
//! pathtrace): the first hop seen in a namespace with no known container
//! asks the worker, once, to find the engines again (their processes, their
//! APIs); the event reader only queues the namespace. Answers are merged on
//! the next tick.
use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::mpsc,
    time::Instant,
};

use super::{engine_processes, Containers, EngineSocket};

/// Where engines are asked: pathtrace's own sockets (`--docker-socket`,
/// `DOCKER_HOST` or the conventional ones), then every engine process found.
#[derive(Clone, Debug, Default)]
pub struct EngineSources {
    pub sockets: Vec<PathBuf>,
    /// `sockets` were pinned by the user: engines found through processes
    /// in pathtrace's own namespace are not asked.
    pub pinned: bool,
    pub own_netns: Option<u32>,
}

impl EngineSources {
    /// Every engine process that may be asked.
    pub fn engines(&self) -> Vec<EngineSocket> {
        engine_processes()
            .into_iter()
            .filter(|e| !(self.pinned && Some(e.netns) == self.own_netns))
            .collect()
    }

    /// Asks every source for its containers.
    pub fn discover(&self) -> Containers {
        let engines = self.engines();
        for e in &engines {
            log::debug!(
                "container engine pid {} (netns {}) at {}",
                e.pid,
                e.netns,
                e.path.display()
            );
        }
        Containers::discover_with(&self.sockets, &engines)
    }
}

/// Which namespaces still need asking, and since when: pure bookkeeping,
/// apart from the worker.
#[derive(Debug, Default)]
struct Asked {
    /// Namespaces asked about, or known to hold a container.
    done: HashSet<u32>,
    /// Asked and not yet answered, with the time of the hop that asked.
    pending: HashMap<u32, Instant>,
}

impl Asked {
    /// Whether `netns` is new (and is now pending).
    fn first_time(&mut self, netns: u32, now: Instant) -> bool {
        if netns == 0 || !self.done.insert(netns) {
            return false;
        }
        self.pending.insert(netns, now);
        true
    }

    fn answered(&mut self, netns: &[u32]) {
        for n in netns {
            self.pending.remove(n);
        }
    }

    fn oldest_pending(&self) -> Option<Instant> {
        self.pending.values().min().copied()
    }
}

struct Answer {
    asked: Vec<u32>,
    containers: Containers,
}

pub struct EngineLookup {
    asked: Asked,
    ask: Option<mpsc::Sender<u32>>,
    answers: mpsc::Receiver<Answer>,
}

impl EngineLookup {
    /// Starts the worker, which asks every engine once straight away: the
    /// answer counts as pending, for namespace 0, until it arrives, for
    /// every packet seen from `since` (when the programs began to trace,
    /// which may be well before the worker starts).
    pub fn start(sources: EngineSources, since: Instant) -> Self {
        let (ask, questions) = mpsc::channel::<u32>();
        let (reply, answers) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("engine-lookup".into())
            .spawn(move || {
                let began = Instant::now();
                let containers = sources.discover();
                log::debug!(
                    "engines asked: {} containers in {:?}",
                    containers.by_netns.len(),
                    began.elapsed()
                );
                if reply
                    .send(Answer {
                        asked: vec![0],
                        containers,
                    })
                    .is_err()
                {
                    return;
                }
                while let Ok(first) = questions.recv() {
                    // One look for every namespace queued meanwhile.
                    let mut asked = vec![first];
                    asked.extend(questions.try_iter());
                    let began = Instant::now();
                    let containers = sources.discover();
                    log::debug!(
                        "engines asked again for netns {asked:?}: {} containers in {:?}",
                        containers.by_netns.len(),
                        began.elapsed()
                    );
                    if reply.send(Answer { asked, containers }).is_err() {
                        break;
                    }
                }
            });
        let ask = match spawned {
            Ok(_) => Some(ask),
            Err(e) => {
                log::warn!("container names for namespaces seen later are unavailable: {e}");
                None
            }
        };
        let mut asked = Asked::default();
        if ask.is_some() {
            asked.pending.insert(0, since);
        }
        Self {
            asked,
            ask,
            answers,
        }
    }

    /// Notes a namespace a hop was seen in, `at` the hop's time: the first
    /// time, the worker is asked to look for engines again, and packets
    /// there from that hop on wait for its answer. Never blocks.
    pub fn saw(&mut self, netns: u32, at: Instant) {
        if self.ask.is_none() || self.asked.done.contains(&netns) {
            return;
        }
        if self.asked.first_time(netns, at) {
            if let Some(ask) = &self.ask {
                if ask.send(netns).is_err() {
                    self.ask = None;
                    self.asked.pending.clear();
                }
            }
        }
    }

    /// The answers that arrived: containers to add to what is known.
    pub fn answers(&mut self) -> Vec<Containers> {
        let mut out = Vec::new();
        for a in self.answers.try_iter() {
            self.asked.answered(&a.asked);
            self.asked
                .done
                .extend(a.containers.by_netns.keys().copied());
            out.push(a.containers);
        }
        if self.ask.is_none() {
            self.asked.pending.clear();
        }
        out
    }

    /// Packets that ended after this wait for the answers (as they wait for
    /// rule tracing); `None`: nothing pending.
    pub fn caught_up_to(&self) -> Option<Instant> {
        self.asked.oldest_pending()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_first_answer_is_pending_for_packets_seen_before_the_worker_started() {
        let traced_from = Instant::now() - Duration::from_secs(3);
        let lookup = EngineLookup::start(EngineSources::default(), traced_from);
        // Until `answers` takes it in, the first answer is pending from
        // when tracing began, not from when the worker was started.
        assert_eq!(lookup.caught_up_to(), Some(traced_from));
    }

    #[test]
    fn each_namespace_is_asked_once_and_pending_until_answered() {
        let t0 = Instant::now();
        let mut a = Asked::default();
        a.done.insert(7);
        assert!(!a.first_time(7, t0), "a container's namespace is known");
        assert!(!a.first_time(0, t0), "no namespace");
        assert!(a.first_time(5, t0));
        assert!(a.first_time(6, t0 + Duration::from_millis(5)));
        assert!(!a.first_time(5, t0 + Duration::from_millis(9)));
        assert_eq!(a.oldest_pending(), Some(t0));
        a.answered(&[5]);
        assert_eq!(a.oldest_pending(), Some(t0 + Duration::from_millis(5)));
        a.answered(&[6]);
        assert_eq!(a.oldest_pending(), None);
        assert!(
            !a.first_time(6, t0),
            "answered namespaces are not asked again"
        );
    }
}
