//! The container image `cargo xtask dist` builds, run the way
//! docs/install.md says: loaded into a real Podman (no registry, no base
//! image), run `--privileged --pid=host --network=host` with `/run/netns`
//! and the Docker socket mounted, it traces the DOCKER-USER drop of the
//! real-Docker lab by rule and container name, and serves `drops --metrics`.
//!
//! Podman's own state lives in a folder of the test's, and its commands run
//! in a namespace the test made, so `--network=host` is that namespace: the
//! metrics port is bound there, not on the machine's own network.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use lab::{Block, Lab};
use pathtrace_tests::{
    connect, docker_lab, limit, of_type, podman::Podman, records, require_root, require_tool, tier,
    Running,
};
use serde_json::Value;

/// Where the container serves its metrics, in the Podman's namespace.
const METRICS: &str = "127.0.0.1:9719";

fn image_archive() -> PathBuf {
    let path = std::env::var_os("PATHTRACE_IMAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!("image: PATHTRACE_IMAGE is not set: run the suite with `cargo xtask test`, which builds the image")
        });
    assert!(path.is_file(), "image: {} is missing", path.display());
    path
}

/// `podman run` of the image as the documentation says, plus what only this
/// machine needs (limits it can't raise, a cgroup the test removes).
fn run_args<'a>(podman: &'a Podman, socket: &'a str, image: &'a str) -> Vec<String> {
    let mut args: Vec<String> = [
        "run",
        "--rm",
        "--privileged",
        "--pid=host",
        "--network=host",
        "-v",
        "/run/netns:/run/netns:ro,rslave",
        "-v",
    ]
    .map(str::to_owned)
    .to_vec();
    args.push(format!("{socket}:/var/run/docker.sock"));
    args.extend([
        format!("--cgroup-parent=/{}", podman.cgroup),
        "--ulimit=nofile=1024:1024".into(),
        "--ulimit=nproc=1024:1024".into(),
        image.to_owned(),
    ]);
    args
}

/// The image's pathtrace, attached (its stdout and stderr are the test's),
/// with `args` after the image name.
fn start(podman: &Podman, socket: &str, image: &str, args: &[&str]) -> Running {
    let mut all = run_args(podman, socket, image);
    all.extend(args.iter().map(|a| (*a).to_owned()));
    all.extend(["--tier".into(), tier()]);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let child = podman
        .command(&refs)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("podman run starts");
    Running::adopt(child)
}

/// `GET path` from inside namespace `ns`: the whole reply.
fn http_get(ns: &str, addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let addr: SocketAddr = addr.parse().expect("a socket address");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let got = lab::in_netns(ns, limit(10), move || -> std::io::Result<String> {
        let mut sock = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        sock.set_read_timeout(Some(Duration::from_secs(5)))?;
        sock.write_all(request.as_bytes())?;
        let mut reply = String::new();
        sock.read_to_string(&mut reply)?;
        Ok(reply)
    });
    match got {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => panic!("GET http://{addr}{path} in {ns}: {e}"),
        Err(e) => panic!("GET http://{addr}{path} in {ns}: {e:?}"),
    }
}

fn check_labels(podman: &Podman, image: &str) {
    let inspect = podman.local(
        &["image", "inspect", image],
        limit(60),
        "podman image inspect",
    );
    let info: Value = serde_json::from_str(&inspect).expect("podman image inspect prints JSON");
    let info = &info[0];
    assert_eq!(info["Os"], "linux", "{info}");
    assert_eq!(info["Architecture"], "amd64", "{info}");
    assert_eq!(
        info["RootFS"]["Layers"].as_array().map(Vec::len),
        Some(1),
        "one layer (from scratch): {info}"
    );
    let labels = &info["Labels"];
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION"),
        "{labels}"
    );
    let revision =
        std::env::var("PATHTRACE_GIT_REV").expect("PATHTRACE_GIT_REV (set by `cargo xtask test`)");
    assert_eq!(
        labels["org.opencontainers.image.revision"], revision,
        "{labels}"
    );
    for key in [
        "title",
        "description",
        "created",
        "source",
        "licenses",
        "base.name",
    ] {
        let value = labels[format!("org.opencontainers.image.{key}")].as_str();
        assert!(
            value.is_some_and(|v| !v.is_empty()),
            "label org.opencontainers.image.{key}: {labels}"
        );
    }
}

/// The DOCKER-USER drop, traced by the image's pathtrace.
fn trace_the_incident(podman: &Podman, lab: &Lab, socket: &str, image: &str) {
    let (client, host) = (lab.addrs.client.to_string(), lab.addrs.host.to_string());
    let run = start(
        podman,
        socket,
        image,
        &[
            "--src",
            &client,
            "--dst",
            &host,
            "--dport",
            "8092",
            "--netns",
            &lab.names.dock,
            "--json",
            "--duration",
            "60",
        ],
    );
    let outcome = connect(lab, &lab.names.client);
    eprintln!("probe from the client: {outcome:?}");
    std::thread::sleep(Duration::from_millis(600));
    let (code, lines) = run.stop();
    assert_eq!(code, 0, "the image's pathtrace exit status");
    let recs = records(&lines);
    let requests: Vec<&Value> = of_type(&recs, "packet")
        .into_iter()
        .filter(|p| p["direction"] == "request")
        .collect();
    assert!(!requests.is_empty(), "no request packets: {recs:#?}");
    for p in requests {
        assert_eq!(p["fate"], "dropped", "{p}");
        assert_eq!(p["hook"], "FORWARD", "{p}");
        let msg = p["diagnosis"]["message"].as_str().unwrap_or_default();
        for want in ["container web", "rule 1 of chain DOCKER-USER"] {
            assert!(msg.contains(want), "diagnosis lacks {want:?}: {msg}");
        }
    }
}

/// `drops --metrics` in the image: a scrape counts the lab's drop in the
/// Docker host's namespace, and promtool accepts it.
fn serve_metrics(podman: &Podman, lab: &Lab, socket: &str, image: &str) {
    let run = start(
        podman,
        socket,
        image,
        &["drops", "--quiet", "--metrics", METRICS],
    );
    let outcome = connect(lab, &lab.names.client);
    eprintln!("probe from the client: {outcome:?}");
    std::thread::sleep(Duration::from_millis(600));
    let reply = http_get(&podman.ns, METRICS, "/metrics");
    let (head, text) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{reply}");
    let prefix = "pathtrace_drops_total{";
    let dock = format!("netns=\"{}\"", lab.names.dock);
    let counted: u64 = text
        .lines()
        .filter(|l| l.starts_with(prefix) && l.contains(&dock))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum();
    assert!(
        counted >= 1,
        "no drop counted in {}:\n{text}",
        lab.names.dock
    );
    let checked = pathtrace_tests::promtool_check(text);
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let (code, _) = run.stop();
    assert_eq!(code, 0, "the image's pathtrace drops exit status");
}

#[test]
fn image_under_podman_traces_the_incident_and_serves_metrics() {
    let test = "image_under_podman_traces_the_incident_and_serves_metrics";
    require_root(test);
    for tool in ["podman", "conmon", "runc", "nsenter", "promtool"] {
        require_tool(test, tool);
    }
    let archive = image_archive();
    let lab = docker_lab("ptimg", Block::Drop);
    let socket = lab
        .docker_socket()
        .expect("a real dockerd has a socket")
        .display()
        .to_string();
    let podman = Podman::new("ptimgpod");
    let loaded = podman.local(
        &["load", "-i", &archive.display().to_string()],
        limit(120),
        "podman load",
    );
    let image = format!("localhost/pathtrace:{}", env!("CARGO_PKG_VERSION"));
    assert!(
        loaded.contains(&image),
        "podman load names {image}: {loaded}"
    );
    check_labels(&podman, &image);

    trace_the_incident(&podman, &lab, &socket, &image);
    serve_metrics(&podman, &lab, &socket, &image);

    let left = podman.local(&["ps", "-aq"], limit(60), "podman ps");
    assert!(left.is_empty(), "containers left after --rm: {left}");
    let (dir, cgroup) = (podman.dir.clone(), podman.cgroup.clone());
    drop(podman);
    assert!(
        pathtrace_tests::podman::mounts_under(&dir).is_empty(),
        "Podman's mounts are left"
    );
    assert!(!dir.exists(), "Podman's folder is left");
    assert!(
        !Path::new("/sys/fs/cgroup/pids").join(&cgroup).exists(),
        "Podman's cgroup is left"
    );
    assert!(
        pathtrace_tests::podman::engine_pids(&dir.display().to_string()).is_empty(),
        "a Podman process outlived the test"
    );
}
