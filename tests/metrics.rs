//! `pathtrace drops --metrics`: Prometheus's own tools read what it serves.
//! pathtrace, Prometheus and every connection are bound inside the test's
//! namespaces.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use pathtrace_tests::{
    limit, of_type, records, require_root, require_tool,
    topo::{in_ns, Routed},
    Running,
};
use serde_json::Value;

/// Where pathtrace serves its metrics, in namespace `a` of the topology.
const EXPORTER: &str = "192.0.2.1:9464";
/// Where the test's Prometheus listens, also in `a`.
const PROMETHEUS: &str = "192.0.2.1:9090";

/// `GET path` from inside namespace `ns`: (status line, body).
fn http_get(ns: &str, addr: &str, path: &str) -> (String, String) {
    let addr: SocketAddr = addr.parse().expect("a socket address");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let got = lab::in_netns(ns, limit(10), move || -> std::io::Result<String> {
        let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        sock.set_read_timeout(Some(Duration::from_secs(5)))?;
        sock.write_all(request.as_bytes())?;
        let mut reply = String::new();
        sock.read_to_string(&mut reply)?;
        Ok(reply)
    });
    let reply = match got {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => panic!("GET http://{addr}{path} in {ns}: {e}"),
        Err(e) => panic!("GET http://{addr}{path} in {ns}: {e:?}"),
    };
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

/// The count the kernel's own iptables counter gives the DROP rule for `dport`.
fn iptables_drops(ns: &str, dport: u16) -> u64 {
    let out = Command::new("ip")
        .args([
            "netns", "exec", ns, "iptables", "-L", "INPUT", "-v", "-x", "-n",
        ])
        .output()
        .expect("iptables -L");
    let listing = String::from_utf8_lossy(&out.stdout);
    listing
        .lines()
        .find(|l| l.contains("DROP") && l.contains(&format!("dpt:{dport}")))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter in {listing}"))
}

/// The value of the `pathtrace_drops_total` series with these labels.
fn series(text: &str, reason: &str, netns: &str) -> Option<u64> {
    let want = [format!("reason=\"{reason}\""), format!("netns=\"{netns}\"")];
    text.lines()
        .filter(|l| l.starts_with("pathtrace_drops_total{"))
        .find(|l| want.iter().all(|w| l.contains(w.as_str())))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
}

#[test]
fn promtool_accepts_the_scrape_while_the_stream_runs() {
    require_root("promtool_accepts_the_scrape_while_the_stream_runs");
    require_tool(
        "promtool_accepts_the_scrape_while_the_stream_runs",
        "promtool",
    );
    let t = Routed::new("ptmetr");
    t.drop_udp(&t.b, 7);
    let run = Running::start_in(
        &t.a,
        &[
            "drops",
            "--json",
            "--metrics",
            EXPORTER,
            "--src",
            "192.0.2.1",
        ],
    );
    let sent = 300;
    t.send_udp(&t.a, None, "198.51.100.2", 7, sent, None);
    std::thread::sleep(Duration::from_millis(300));

    let listening = Command::new("ip")
        .args(["netns", "exec", &t.a, "ss", "-Hltn"])
        .output()
        .expect("ss");
    let listening = String::from_utf8_lossy(&listening.stdout);
    assert!(
        listening.contains(EXPORTER) && !listening.contains("0.0.0.0:9464"),
        "bound to {EXPORTER} only: {listening}"
    );
    let (status, text) = http_get(&t.a, EXPORTER, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{text}");
    let (missing, _) = http_get(&t.a, EXPORTER, "/");
    assert_eq!(missing, "HTTP/1.1 404 Not Found");

    let checked = pathtrace_tests::promtool_check(&text);
    assert!(
        checked.status.success() && checked.stdout.is_empty() && checked.stderr.is_empty(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    let kernel = iptables_drops(&t.b, 7);
    assert!(
        kernel > 0 && kernel <= u64::from(sent),
        "kernel dropped {kernel}"
    );
    assert_eq!(
        series(&text, "NETFILTER_DROP", &t.b),
        Some(kernel),
        "the scrape agrees with the kernel's own counter:\n{text}"
    );
    for line in [
        "# TYPE pathtrace_drops_total counter",
        "# TYPE pathtrace_lost_events_total counter",
        "# TYPE pathtrace_build_info gauge",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("pathtrace_build_info{version=\"")
                && l.contains(",revision=\"")
                && l.ends_with("} 1")),
        "{text}"
    );

    let (code, lines) = run.stop();
    assert_eq!(code, 0, "pathtrace drops exit status");
    let recs = records(&lines);
    assert!(
        of_type(&recs, "drop")
            .iter()
            .any(|d| d["reason"] == "NETFILTER_DROP"),
        "the stream printed the drops alongside"
    );
}

/// A Prometheus server of the test's own, ended by pid and its data removed
/// when dropped (the test passing or not).
struct Prometheus {
    child: Child,
    dir: PathBuf,
}

impl Prometheus {
    fn start(ns: &str, listen: &str, target: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("pathtrace-prometheus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a Prometheus directory");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: pathtrace\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("writing prometheus.yml");
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("a log file");
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "prometheus"])
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        Self { child, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // `ip netns exec` execs Prometheus: this pid is the server's.
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !matches!(self.child.try_wait(), Ok(Some(_))) {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The value Prometheus's query API gives for `query`, if any series.
fn query(ns: &str, query: &str) -> Option<f64> {
    let encoded: String = query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (status, body) = http_get(ns, PROMETHEUS, &format!("/api/v1/query?query={encoded}"));
    if !status.contains("200") {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    v["data"]["result"]
        .as_array()?
        .first()?
        .get("value")?
        .get(1)?
        .as_str()?
        .parse()
        .ok()
}

/// Whether something answers HTTP at `addr` in `ns` yet.
fn answers(ns: &str, addr: &str) -> bool {
    let addr: SocketAddr = addr.parse().expect("a socket address");
    matches!(
        lab::in_netns(ns, limit(5), move || TcpStream::connect_timeout(
            &addr,
            Duration::from_secs(1)
        )
        .is_ok()),
        Ok(true)
    )
}

#[test]
fn prometheus_scrapes_a_flood_of_drops() {
    require_root("prometheus_scrapes_a_flood_of_drops");
    require_tool("prometheus_scrapes_a_flood_of_drops", "prometheus");
    let t = Routed::new("ptprom");
    t.drop_udp(&t.b, 7);
    in_ns(&t.a, &["ip", "link", "set", "lo", "up"]);
    let run = Running::start_in(
        &t.a,
        &[
            "drops",
            "--quiet",
            "--metrics",
            EXPORTER,
            "--src",
            "192.0.2.1",
        ],
    );
    let prom = Prometheus::start(&t.a, PROMETHEUS, EXPORTER);
    let q = "pathtrace_drops_total{reason=\"NETFILTER_DROP\"}";
    let deadline = Instant::now() + limit(60);
    while !answers(&t.a, PROMETHEUS) {
        assert!(
            Instant::now() < deadline,
            "Prometheus never listened on {PROMETHEUS}:\n{}",
            prom.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    t.send_udp(&t.a, None, "198.51.100.2", 7, 20_000, None);
    let kernel = iptables_drops(&t.b, 7);
    assert!(kernel > 0, "the flood was dropped");
    let value = loop {
        if let Some(v) = query(&t.a, q).filter(|v| *v > 0.0) {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never had a non-zero {q}:\n{}",
            prom.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        value <= kernel as f64,
        "Prometheus has {value}, the kernel dropped {kernel}"
    );
    eprintln!("Prometheus: {q} = {value} (iptables counted {kernel})");
    let up = query(&t.a, "up{job=\"pathtrace\"}");
    assert_eq!(up, Some(1.0), "the scrape target is up");
    drop(prom);
    let (code, lines) = run.stop();
    assert_eq!(code, 0, "pathtrace drops exit status");
    assert!(lines.is_empty(), "--quiet prints nothing: {lines:?}");
}
