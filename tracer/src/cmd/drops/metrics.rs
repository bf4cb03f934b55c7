//! `drops --metrics ADDR:PORT`: the kernel's drop counts on `/metrics`, in
//! Prometheus's text format, served while the stream or `--top` runs.
//!
//! Connections are answered by small tasks that ask the command's own loop
//! (which owns the tracer) for the text, so a scrape always reads the
//! kernel's counts of that moment.
use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{mpsc, oneshot, Semaphore},
};
use tracer_common::DropKey;

use crate::{
    error::Error,
    loader::Tracer,
    names::View,
    render::prometheus::{DropLabels, DropSeries, Exposition, CONTENT_TYPE},
};

/// Label sets exported with their own series; the rest go to `other`.
pub const SERIES_LIMIT: usize = 500;
/// Connections answered at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 8;
/// A request head larger than this is refused.
const MAX_REQUEST: usize = 8192;
/// A client that has not sent its request by then is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A scrape waiting for the text (or for what went wrong).
pub type Scrape = oneshot::Sender<Result<String, Error>>;

/// The listening side: scrapes arrive on [`Exporter::next`].
pub struct Exporter {
    scrapes: mpsc::Receiver<Scrape>,
    pub addr: SocketAddr,
}

impl Exporter {
    /// Binds `addr` (that address only) and starts accepting on the current
    /// runtime.
    pub async fn bind(addr: SocketAddr) -> Result<Self, Error> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Runtime(format!("--metrics: binding {addr}: {e}")))?;
        let addr = listener.local_addr().unwrap_or(addr);
        let (tx, scrapes) = mpsc::channel(MAX_CONNECTIONS);
        tokio::spawn(accept(listener, tx));
        Ok(Self { scrapes, addr })
    }

    /// The exporter `--metrics ADDR` asks for, bound and announced; none
    /// without the flag.
    pub async fn for_flag(addr: Option<SocketAddr>) -> Result<Option<Self>, Error> {
        let Some(addr) = addr else {
            return Ok(None);
        };
        let exporter = Self::bind(addr).await?;
        eprintln!(
            "pathtrace: serving metrics on http://{}/metrics",
            exporter.addr
        );
        Ok(Some(exporter))
    }

    /// The next scrape to answer.
    pub async fn next(&mut self) -> Scrape {
        match self.scrapes.recv().await {
            Some(s) => s,
            None => std::future::pending().await,
        }
    }
}

/// The next scrape of an exporter that may not exist (then never).
pub(crate) async fn next_scrape(exporter: &mut Option<Exporter>) -> Scrape {
    match exporter {
        Some(e) => e.next().await,
        None => std::future::pending().await,
    }
}

async fn accept(listener: TcpListener, tx: mpsc::Sender<Scrape>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((sock, _)) => {
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Err(e) = answer(sock, tx).await {
                        log::debug!("--metrics: a connection failed: {e}");
                    }
                    drop(permit);
                });
            }
            Err(e) => {
                log::warn!("--metrics: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads the request head, up to its blank line.
async fn read_head(sock: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > MAX_REQUEST {
            return Ok(None);
        }
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// Status, content type and body for a request line.
async fn respond(request_line: &str, tx: &mpsc::Sender<Scrape>) -> (&'static str, String) {
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if method != "GET" && method != "HEAD" {
        return ("405 Method Not Allowed", "only GET and HEAD\n".into());
    }
    if path != "/metrics" {
        return ("404 Not Found", "pathtrace serves /metrics only\n".into());
    }
    let (reply, answer) = oneshot::channel();
    if tx.send(reply).await.is_err() {
        return ("503 Service Unavailable", "pathtrace is stopping\n".into());
    }
    match answer.await {
        Ok(Ok(text)) => ("200 OK", text),
        Ok(Err(e)) => ("500 Internal Server Error", format!("{e}\n")),
        Err(_) => ("503 Service Unavailable", "pathtrace is stopping\n".into()),
    }
}

async fn answer(mut sock: TcpStream, tx: mpsc::Sender<Scrape>) -> std::io::Result<()> {
    let head = match tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut sock)).await {
        Ok(head) => head?,
        Err(_) => None,
    };
    let (status, body) = match &head {
        Some(h) => respond(h.lines().next().unwrap_or(""), &tx).await,
        None => ("400 Bad Request", "bad request\n".into()),
    };
    let content_type = if status.starts_with("200") {
        CONTENT_TYPE
    } else {
        "text/plain; charset=utf-8"
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head.as_deref().is_some_and(|h| h.starts_with("HEAD ")) {
        out.push_str(&body);
    }
    sock.write_all(out.as_bytes()).await?;
    sock.shutdown().await
}

/// Names the kernel's counts and keeps their series bounded across scrapes.
pub struct DropMetrics {
    series: DropSeries,
    /// A key keeps the labels it was first given (a namespace that gains a
    /// name later must not move its counts to a new series).
    labels: HashMap<DropKey, DropLabels>,
}

impl Default for DropMetrics {
    fn default() -> Self {
        Self {
            series: DropSeries::new(SERIES_LIMIT),
            labels: HashMap::new(),
        }
    }
}

impl DropMetrics {
    fn labels(&mut self, key: &DropKey, view: &mut View) -> DropLabels {
        if let Some(l) = self.labels.get(key) {
            return l.clone();
        }
        let name_len = key
            .ifname
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(key.ifname.len());
        let device = String::from_utf8_lossy(&key.ifname[..name_len]).into_owned();
        view.resolve_netns(key.netns);
        let l = DropLabels {
            reason: view.reasons.name(key.reason),
            location: view
                .syms
                .as_ref()
                .and_then(|s| s.symbolize(key.location))
                .map(|(n, _)| n.to_owned())
                .unwrap_or_else(|| format!("{:#x}", key.location)),
            device: if device.is_empty() {
                "-".into()
            } else {
                device
            },
            netns: view
                .netns_name(key.netns)
                .unwrap_or_else(|| key.netns.to_string()),
        };
        self.labels.insert(*key, l.clone());
        l
    }

    /// The exposition text of this moment.
    pub fn render(&mut self, tracer: &Tracer, view: &mut View) -> Result<String, Error> {
        let counts = tracer.drop_counts()?;
        let rows: Vec<(DropLabels, u64)> = counts
            .iter()
            .map(|(k, n)| (self.labels(k, view), *n))
            .collect();
        let drops = self.series.aggregate(rows);
        Ok(Exposition {
            drops: &drops,
            series_limit: self.series.limit(),
            lost_events: tracer.counters().lost,
            version: env!("CARGO_PKG_VERSION"),
            revision: env!("PATHTRACE_GIT_REV"),
        }
        .render())
    }

    /// Answers one scrape.
    pub fn answer(&mut self, scrape: Scrape, tracer: &Tracer, view: &mut View) {
        // The client may have gone: nothing to do then.
        let _ = scrape.send(self.render(tracer, view));
    }
}
