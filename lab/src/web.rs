//! The real `web` container: the offline-built busybox image, `docker run`, inspect.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::PathBuf;

use super::cmd::{stdout_text, Cmd};
use super::config::{httpd_command, CONTAINER_NAME, CONTAINER_PORT, IMAGE, PUBLISHED_PORT};
use super::docker::{first_existing, mkdir, write, RealDocker};
use super::error::LabError;

/// The `web` container's network identity.
#[derive(Debug, Clone)]
pub(crate) struct Sandbox {
    pub pid: i32,
    pub path: PathBuf,
    pub ip: String,
}

impl RealDocker {
    /// Builds the busybox image offline: busybox plus links, imported from a tarball.
    pub(crate) fn build_image(&self) -> Result<(), LabError> {
        let busybox = first_existing(&["/bin/busybox", "/usr/bin/busybox"])
            .ok_or_else(|| LabError::Unsupported("busybox-static is not installed".into()))?;
        let root = self.state.join("image");
        let _ = fs::remove_dir_all(&root);
        mkdir(&root.join("bin"))?;
        mkdir(&root.join("www"))?;
        let target = root.join("bin/busybox");
        fs::copy(&busybox, &target)
            .map_err(|e| LabError::io(format!("copy {busybox} to {}", target.display()), e))?;
        for name in ["sh", "httpd", "sleep"] {
            let link = root.join("bin").join(name);
            symlink("busybox", &link)
                .map_err(|e| LabError::io(format!("symlink {}", link.display()), e))?;
        }
        write(
            &root.join("www/index.html"),
            "pathtrace lab: hello from web\n",
        )?;
        let tarball = self.state.join("image.tar");
        Cmd::new("tar")
            .arg("-C")
            .arg(root.display().to_string())
            .arg("-cf")
            .arg(tarball.display().to_string())
            .arg(".")
            .run()?;
        self.cli(&["import", &tarball.display().to_string(), IMAGE])?;
        let _ = fs::remove_file(&tarball);
        let _ = fs::remove_dir_all(&root);
        Ok(())
    }

    /// `docker run -d --name web -p 8092:80 IMAGE ...`, with or without a listener.
    pub(crate) fn run_web(&self, listener: bool) -> Result<(), LabError> {
        let publish = format!("{PUBLISHED_PORT}:{CONTAINER_PORT}");
        let port = CONTAINER_PORT.to_string();
        let mut args = vec!["run", "-d", "--name", CONTAINER_NAME, "-p", &publish, IMAGE];
        if listener {
            args.extend(httpd_command(&port));
        } else {
            args.extend(["/bin/sh", "-c", "sleep 100000"]);
        }
        self.cli(&args).map(|_| ())
    }

    /// The web container's init pid, sandbox (netns) path and address.
    pub(crate) fn sandbox(&self) -> Result<Sandbox, LabError> {
        let format =
            "{{.State.Pid}} {{.NetworkSettings.SandboxKey}} {{.NetworkSettings.IPAddress}}";
        let out = self.cli(&["inspect", "-f", format, CONTAINER_NAME])?;
        let text = stdout_text(&out);
        let parts: Vec<&str> = text.split_whitespace().collect();
        match parts.as_slice() {
            [pid, path, ip] => Ok(Sandbox {
                pid: pid.parse().map_err(|_| LabError::Parse {
                    cmd: "docker inspect".into(),
                    detail: format!("bad pid in {text:?}"),
                })?,
                path: PathBuf::from(path),
                ip: ip.to_string(),
            }),
            _ => Err(LabError::Parse {
                cmd: "docker inspect".into(),
                detail: format!("expected 'pid sandbox ip', got {text:?}"),
            }),
        }
    }

    /// Removes every container of this daemon (`docker rm -f`).
    pub(crate) fn remove_containers(&self) -> Result<(), LabError> {
        let out = self.cli(&["ps", "-aq"])?;
        let text = stdout_text(&out);
        let ids: Vec<&str> = text.split_whitespace().collect();
        if ids.is_empty() {
            return Ok(());
        }
        let mut args = vec!["rm", "-f"];
        args.extend(ids);
        self.cli(&args).map(|_| ())
    }
}
