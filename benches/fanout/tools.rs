//! The tools compared, how they are installed, and the command line each one runs for a
//! piece of work.
//!
//! Invariant: every tool gets the same work on the same labels (`h1`..`hN` through one
//! ssh_config, or our client's equivalent), with stdin and stdout to /dev/null and no
//! ssh agent; a tool that cannot do a piece of work says why instead of running.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::opts::env_flag;

/// A client compared in the benchmark.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Tool {
    /// ssh-parallel (this crate), through the bench's own `__client` mode (through the
    /// target's jump host, if it has one).
    Ours,
    /// ssh-parallel straight to the target, past its jump host: the baseline of the
    /// jump-host case (`jump.rs`).
    OursDirect,
    /// parallel-ssh from PyPI (libssh2 through ssh2-python, gevent), in a venv.
    ParallelSsh,
    /// Debian's `pssh` (`parallel-ssh`, `parallel-scp`, `parallel-slurp`): one `ssh` per host.
    Pssh,
    /// Debian's `pdsh` with the ssh rcmd module (and `pdcp`/`rpdcp`): one `ssh` per host.
    Pdsh,
    /// Net::OpenSSH::Parallel (Debian's libnet-openssh-parallel-perl): an `ssh` master per
    /// host plus an `ssh` per command.
    Nop,
    /// Plain OpenSSH `scp` / `rsync -e ssh`, one process per host in parallel (the
    /// baseline for transfers).
    OpenSsh,
    /// The `ssh-parallel` binary (see `cli.rs`, as are the next two).
    Cli,
    /// ClusterShell's `clush`: one `ssh` per host.
    Clush,
    /// bssh (crates.io): one process, russh sessions on tokio.
    Bssh,
}

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Tool::Ours => "ssh-parallel",
            Tool::OursDirect => "ssh-parallel (direct)",
            Tool::ParallelSsh => "parallel-ssh",
            Tool::Pssh => "pssh",
            Tool::Pdsh => "pdsh",
            Tool::Nop => "Net::OpenSSH::Parallel",
            Tool::OpenSsh => "OpenSSH scp/rsync",
            Tool::Cli => "ssh-parallel (binary)",
            Tool::Clush => "clush",
            Tool::Bssh => "bssh",
        }
    }
}

/// What is installed, with versions; `Err` says why a peer cannot run.
pub struct Peers {
    /// The venv's python with parallel-ssh installed.
    pub python: Result<PathBuf, String>,
    /// Debian's pssh version.
    pub pssh: Result<String, String>,
    /// Debian's pdsh version.
    pub pdsh: Result<String, String>,
    /// Net::OpenSSH::Parallel's version.
    pub nop: Result<String, String>,
    /// `ssh -V`'s version line.
    pub openssh: Result<String, String>,
    /// parallel-ssh's version (or why it is missing).
    pub parallel_ssh_version: String,
    /// The parallel-ssh driver script (`peer_parallel_ssh.py`), written out.
    pub py_script: PathBuf,
    /// The Net::OpenSSH::Parallel driver script (`peer_nop.pl`), written out.
    pub pl_script: PathBuf,
}

impl Peers {
    pub fn available(&self, tool: Tool) -> Result<(), String> {
        let r = match tool {
            Tool::Ours | Tool::OursDirect => return Ok(()),
            Tool::ParallelSsh => self.python.as_ref().map(drop),
            Tool::Pssh => self.pssh.as_ref().map(drop),
            Tool::Pdsh => self.pdsh.as_ref().map(drop),
            Tool::Nop => self.nop.as_ref().map(drop),
            Tool::OpenSsh => self.openssh.as_ref().map(drop),
            Tool::Cli | Tool::Clush | Tool::Bssh => return crate::cli::available(tool).map(drop),
        };
        r.map_err(Clone::clone)
    }

    pub fn versions(&self) -> Vec<String> {
        let v = |r: &Result<String, String>| match r {
            Ok(v) => v.clone(),
            Err(e) => format!("unavailable: {e}"),
        };
        vec![
            format!("parallel-ssh {} (PyPI, in a venv)", self.parallel_ssh_version),
            format!("pssh {} (Debian)", v(&self.pssh)),
            format!("pdsh {} (Debian)", v(&self.pdsh)),
            format!("Net::OpenSSH::Parallel {} (Debian)", v(&self.nop)),
            format!("{} (Debian)", v(&self.openssh)),
        ]
        .into_iter()
        .chain(crate::cli::versions())
        .collect()
    }
}

fn sh_ok(script: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn sh_out(script: &str) -> String {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn dpkg_version(pkg: &str) -> Option<String> {
    let v = sh_out(&format!("dpkg-query -W -f='${{Version}}' {pkg} 2>/dev/null"));
    (!v.is_empty()).then_some(v)
}

/// Installs what is missing (Debian packages with apt-get, parallel-ssh into a venv under
/// `work`) and says what can run. Never fails: a peer that cannot be had is reported.
pub fn install(work: &Path, allow_install: bool) -> Peers {
    // clustershell (clush) is for the command-line rows (cli.rs); the others by index below.
    let apt_wanted: [(&str, &str); 7] = [
        ("pssh", "command -v parallel-ssh"),
        ("pdsh", "command -v pdsh"),
        ("libnet-openssh-parallel-perl", "perl -MNet::OpenSSH::Parallel -e1"),
        ("openssh-server", "test -x /usr/sbin/sshd"),
        ("openssh-client", "command -v ssh && command -v scp"),
        ("rsync", "command -v rsync"),
        ("clustershell", "command -v clush"),
    ];
    let missing: Vec<&str> = apt_wanted.iter().filter(|(_, t)| !sh_ok(t)).map(|(p, _)| *p).collect();
    let mut apt_error = String::new();
    let iproute_missing = !sh_ok("command -v ip && command -v tc");
    let mut to_install = missing.clone();
    if iproute_missing {
        to_install.push("iproute2");
    }
    if !to_install.is_empty() {
        if allow_install {
            eprintln!("fanout: installing {} with apt-get", to_install.join(" "));
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {}",
                    to_install.join(" ")
                ))
                .stdout(Stdio::null())
                .output();
            match out {
                Ok(o) if o.status.success() => {}
                Ok(o) => {
                    let err = String::from_utf8_lossy(&o.stderr);
                    apt_error = format!("apt-get install failed: {}", err.trim().lines().last().unwrap_or(""))
                }
                Err(e) => apt_error = format!("cannot run apt-get: {e}"),
            }
        } else {
            apt_error = "not installed (FANOUT_NO_INSTALL set)".into();
        }
    }
    let check = |pkg: &str, test: &str| -> Result<String, String> {
        if sh_ok(test) {
            Ok(dpkg_version(pkg).unwrap_or_else(|| "(version unknown)".into()))
        } else if apt_error.is_empty() {
            Err(format!("{pkg} not usable after install"))
        } else {
            Err(format!("{pkg}: {apt_error}"))
        }
    };
    let pssh = check("pssh", apt_wanted[0].1);
    let pdsh = check("pdsh", apt_wanted[1].1);
    let nop = check("libnet-openssh-parallel-perl", apt_wanted[2].1);
    let openssh = check("openssh-client", apt_wanted[4].1)
        .map(|_| sh_out("ssh -V 2>&1"))
        .and_then(|v| {
            if sh_ok("command -v rsync") {
                Ok(v)
            } else {
                Err("rsync missing".into())
            }
        });

    // parallel-ssh from PyPI into a venv under the target directory.
    let venv = work.join("venv");
    let python = venv.join("bin/python");
    let import_ok = |py: &Path| {
        Command::new(py)
            .args(["-c", "import pssh.clients, gevent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let mut py_result = Ok(python.clone());
    if !import_ok(&python) {
        if !allow_install {
            py_result = Err("parallel-ssh not installed (FANOUT_NO_INSTALL set)".into());
        } else {
            eprintln!("fanout: installing parallel-ssh from PyPI into {}", venv.display());
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "python3 -m venv '{v}' && '{v}/bin/pip' install -q --disable-pip-version-check parallel-ssh",
                    v = venv.display()
                ))
                .stdout(Stdio::null())
                .output();
            match out {
                Ok(o) if o.status.success() && import_ok(&python) => {}
                Ok(o) => {
                    let err = String::from_utf8_lossy(&o.stderr);
                    py_result = Err(format!(
                        "venv/pip install of parallel-ssh failed: {}",
                        err.trim().lines().last().unwrap_or("")
                    ))
                }
                Err(e) => py_result = Err(format!("cannot run python3: {e}")),
            }
        }
    }
    let parallel_ssh_version = if py_result.is_ok() {
        sh_out(&format!(
            "'{}' -c 'import importlib.metadata as m; print(m.version(\"parallel-ssh\"), \"with ssh2-python\", m.version(\"ssh2-python\"))'",
            python.display()
        ))
    } else {
        String::new()
    };
    let py_script = work.join("peer_parallel_ssh.py");
    let pl_script = work.join("peer_nop.pl");
    let _ = std::fs::write(&py_script, include_str!("peer_parallel_ssh.py"));
    let _ = std::fs::write(&pl_script, include_str!("peer_nop.pl"));
    Peers {
        python: py_result,
        pssh,
        pdsh,
        nop,
        openssh,
        parallel_ssh_version,
        py_script,
        pl_script,
    }
}

/// Where a case's server is and how the peers reach it.
pub struct Target {
    /// The server's port on 127.0.0.1.
    pub port: u16,
    /// The login name.
    pub user: String,
    /// The private key the server authorizes.
    pub key: PathBuf,
    /// An ssh_config with `Host h*` → 127.0.0.1:port, the key, no host-key checks.
    pub ssh_config: PathBuf,
    /// Where the ssh_config, hosts files and profiles go.
    pub dir: PathBuf,
    /// The port of a jump host on 127.0.0.1 (same user and key) that every tool but
    /// [`Tool::OursDirect`] goes through; the ssh_config then says `ProxyJump` (see `jump.rs`).
    pub jump: Option<u16>,
}

/// The lines of an ssh_config `Host` block (after its `Host` line) that every tool
/// reads: 127.0.0.1:`port` as `user` with `key` alone (no agent), no host-key checks,
/// no prompts, no connection sharing.
pub fn host_block(port: u16, user: &str, key: &Path) -> String {
    format!(
        "  HostName 127.0.0.1\n  Port {port}\n  User {user}\n  IdentityFile {key}\n  \
         IdentitiesOnly yes\n  IdentityAgent none\n  StrictHostKeyChecking no\n  \
         UserKnownHostsFile /dev/null\n  GlobalKnownHostsFile /dev/null\n  BatchMode yes\n  \
         LogLevel ERROR\n  ControlMaster no\n  ControlPath none\n",
        key = key.display()
    )
}

impl Target {
    pub fn new(dir: &Path, tag: &str, port: u16, user: &str, key: &Path) -> std::io::Result<Target> {
        let ssh_config = dir.join(format!("ssh_config-{tag}"));
        std::fs::write(&ssh_config, format!("Host h*\n{}", host_block(port, user, key)))?;
        Ok(Target {
            port,
            user: user.into(),
            key: key.into(),
            ssh_config,
            dir: dir.into(),
            jump: None,
        })
    }

    /// A pssh hosts file `h1`..`hN`.
    pub fn hosts_file(&self, n: usize) -> PathBuf {
        let path = self.dir.join(format!("hosts-{n}"));
        if !path.exists() {
            let text: String = (1..=n).map(|i| format!("h{i}\n")).collect();
            let _ = std::fs::write(&path, text);
        }
        path
    }
}

/// A piece of work every tool does on `n` labels.
#[derive(Clone, Debug)]
pub enum Work {
    /// `steps` commands per label; `joins`: every label waits for all after each step.
    Run { cmd: String, steps: usize, joins: bool },
    /// Copy one local file to the same remote path on every label.
    Put {
        local: PathBuf,
        remote: PathBuf,
        bytes: u64,
        /// Over SFTP (ours and parallel-ssh only) instead of SCP.
        sftp: bool,
    },
    /// Copy one remote file from every label into `local_dir` (one file per label).
    Get {
        remote: PathBuf,
        local_dir: PathBuf,
        bytes: u64,
        /// Over SFTP (ours and parallel-ssh only) instead of SCP.
        sftp: bool,
    },
    /// rsync a tree of files to `remote_dir/<label>/` on every label.
    Rsync {
        tree: PathBuf,
        remote_dir: PathBuf,
        files: usize,
    },
}

fn work_name(w: &Work) -> &'static str {
    match w {
        Work::Run { steps: 1, .. } => "run",
        Work::Run { joins: true, .. } => "lockstep",
        Work::Run { .. } => "queues",
        Work::Put { .. } => "put",
        Work::Get { .. } => "get",
        Work::Rsync { .. } => "rsync",
    }
}

/// The work's arguments for our `__client` (`prefix` "") and the peer scripts (`prefix`
/// "--"): `kind=...` and what that kind needs.
fn work_args(w: &Work, prefix: &str) -> Vec<String> {
    match w {
        Work::Run { cmd, steps, joins } => vec![
            format!("{prefix}kind=run"),
            format!("{prefix}cmd={cmd}"),
            format!("{prefix}steps={steps}"),
            format!("{prefix}joins={}", u8::from(*joins)),
        ],
        Work::Put {
            local, remote, sftp, ..
        } => vec![
            format!("{prefix}kind=put"),
            format!("{prefix}local={}", local.display()),
            format!("{prefix}remote={}", remote.display()),
        ]
        .into_iter()
        .chain(sftp.then(|| format!("{prefix}protocol=sftp")))
        .collect(),
        Work::Get {
            remote,
            local_dir,
            sftp,
            ..
        } => vec![
            format!("{prefix}kind=get"),
            format!("{prefix}remote={}", remote.display()),
            format!("{prefix}local={}/%LABEL%", local_dir.display()),
        ]
        .into_iter()
        .chain(sftp.then(|| format!("{prefix}protocol=sftp")))
        .collect(),
        Work::Rsync { tree, remote_dir, .. } => vec![
            format!("{prefix}kind=rsync"),
            format!("{prefix}local={}/", tree.display()),
            format!("{prefix}remote={}/%LABEL%/", remote_dir.display()),
        ],
    }
}

fn shell(script: String, args: &[String]) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c").arg(script).arg("sh").args(args);
    c
}

/// The command `tool` runs for `work` on `n` labels of `target`; `Err` says why the tool
/// does not do this work.
pub fn command(
    tool: Tool,
    peers: &Peers,
    target: &Target,
    n: usize,
    work: &Work,
    workers: Option<usize>,
) -> Result<Command, String> {
    peers.available(tool)?;
    let t = target;
    let cfg = t.ssh_config.display().to_string();
    let ssh_x = format!("-F {cfg}");
    let hosts = || t.hosts_file(n).display().to_string();
    let pdsh_hosts = format!("h[1-{n}]");
    let common = |prefix: &str| {
        let mut v = vec![
            format!("{prefix}n={n}"),
            format!("{prefix}port={}", t.port),
            format!("{prefix}user={}", t.user),
            format!("{prefix}key={}", t.key.display()),
        ];
        if tool != Tool::OursDirect {
            v.extend(t.jump.map(|p| format!("{prefix}jump_port={p}")));
        }
        v
    };
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = match (tool, work) {
        (Tool::Ours | Tool::OursDirect, w) => {
            // FANOUT_PROFILE=1: our client runs under `perf record` (profiling runs only:
            // perf's own CPU is counted then).
            // FANOUT_PROFILE=syscalls: counts its recvfrom calls, those that found nothing
            // (EAGAIN) and its epoll waits, into target/fanout/syscalls-*.txt.
            let profile = std::env::var("FANOUT_PROFILE").unwrap_or_default();
            let mut c = if profile == "syscalls" {
                let mut c = Command::new("perf");
                let data = t.dir.join(format!("syscalls-{}-{n}.txt", work_name(w)));
                c.args(["stat", "-o"]).arg(data).args([
                    "-e",
                    "syscalls:sys_enter_recvfrom",
                    "-e",
                    "syscalls:sys_exit_recvfrom",
                    "--filter",
                    "ret == -11",
                    "-e",
                    "syscalls:sys_enter_sendto",
                    "-e",
                    "syscalls:sys_enter_epoll_wait",
                    "--",
                ]);
                c.arg(exe);
                c
            } else if env_flag("FANOUT_PROFILE") {
                let mut c = Command::new("perf");
                let data = t.dir.join(format!("perf-{}-{n}.data", work_name(w)));
                c.args(["record", "-q", "-F", "997", "-e", "cpu-clock", "-g", "-o"])
                    .arg(data)
                    .arg("--")
                    .arg(exe);
                c
            } else {
                Command::new(exe)
            };
            c.arg("__client").args(common(""));
            // FANOUT_WORKERS overrides our `workers` (experiments).
            let workers = std::env::var("FANOUT_WORKERS")
                .ok()
                .and_then(|w| w.parse::<usize>().ok())
                .or(workers);
            if let Some(w) = workers {
                c.arg(format!("workers={w}"));
            }
            if let Ok(t) = std::env::var("FANOUT_IO_THREADS") {
                c.arg(format!("io_threads={t}"));
            }
            c.args(work_args(w, ""));
            c
        }
        (Tool::ParallelSsh, Work::Rsync { .. }) => return Err("parallel-ssh has no rsync".into()),
        (Tool::ParallelSsh, w) => {
            let mut c = Command::new(peers.python.as_ref().map_err(Clone::clone)?);
            c.arg(&peers.py_script).args(common("--"));
            c.args(work_args(w, "--"));
            c
        }
        (Tool::Nop, w) => {
            let mut c = Command::new("perl");
            c.arg(&peers.pl_script).args(common("--"));
            c.args(work_args(w, "--"));
            c
        }
        (Tool::Pssh, Work::Run { cmd, steps, joins }) => {
            if *steps > 1 && !*joins {
                return Err("pssh has no per-host queues (each call is a lockstep step)".into());
            }
            // `-i` keeps each host's output in memory and prints it: its capture.
            shell(
                "i=0; while [ $i -lt $1 ]; do parallel-ssh -h \"$2\" -p \"$3\" -t 0 -i -x \"$4\" \"$5\" || exit 1; i=$((i+1)); done"
                    .into(),
                &[steps.to_string(), hosts(), n.to_string(), ssh_x.clone(), cmd.clone()],
            )
        }
        (Tool::Pssh, Work::Put { local, remote, .. }) => {
            let mut c = Command::new("parallel-scp");
            c.args(["-h", &hosts(), "-p", &n.to_string(), "-t", "0", "-x", &ssh_x]);
            c.arg(local).arg(remote);
            c
        }
        (Tool::Pssh, Work::Get { remote, local_dir, .. }) => {
            let mut c = Command::new("parallel-slurp");
            c.args(["-h", &hosts(), "-p", &n.to_string(), "-t", "0", "-x", &ssh_x, "-L"]);
            c.arg(local_dir).arg(remote).arg("file");
            c
        }
        (Tool::Pssh, Work::Rsync { .. }) => {
            return Err(
                "parallel-rsync cannot give each label its own destination, and every label here is one machine".into(),
            )
        }
        (Tool::Pdsh, w) => {
            let mut c = match w {
                Work::Run { cmd, steps, joins } => {
                    if *steps > 1 && !*joins {
                        return Err("pdsh has no per-host queues (each call is a lockstep step)".into());
                    }
                    shell(
                        "i=0; while [ $i -lt $1 ]; do pdsh -S -f \"$2\" -w \"$3\" \"$4\" || exit 1; i=$((i+1)); done"
                            .into(),
                        &[steps.to_string(), n.to_string(), pdsh_hosts.clone(), cmd.clone()],
                    )
                }
                Work::Put { local, remote, .. } => {
                    let mut c = Command::new("pdcp");
                    c.args(["-f", &n.to_string(), "-w", &pdsh_hosts]).arg(local).arg(remote);
                    c
                }
                Work::Get { remote, local_dir, .. } => {
                    let mut c = Command::new("rpdcp");
                    c.args(["-f", &n.to_string(), "-w", &pdsh_hosts])
                        .arg(remote)
                        .arg(local_dir);
                    c
                }
                Work::Rsync { .. } => return Err("pdsh has no rsync".into()),
            };
            c.env("PDSH_RCMD_TYPE", "ssh")
                .env("PDSH_SSH_ARGS", format!("-F {cfg} -x -l%u %h"));
            c
        }
        (Tool::Cli | Tool::Clush | Tool::Bssh, w) => crate::cli::command(tool, t, n, w)?,
        (Tool::OpenSsh, Work::Run { .. }) => return Err("baseline for transfers only".into()),
        (Tool::OpenSsh, w) => {
            let body = match w {
                Work::Put { local, remote, .. } => {
                    format!("scp -F \"$1\" -q '{}' h$i:'{}'", local.display(), remote.display())
                }
                Work::Get { remote, local_dir, .. } => {
                    format!(
                        "scp -F \"$1\" -q h$i:'{}' '{}/h'$i",
                        remote.display(),
                        local_dir.display()
                    )
                }
                Work::Rsync { tree, remote_dir, .. } => format!(
                    "rsync -a -e \"ssh -F $1\" '{}/' h$i:'{}/h'$i/",
                    tree.display(),
                    remote_dir.display()
                ),
                Work::Run { .. } => unreachable!(),
            };
            shell(
                format!(
                    "pids=''; i=1; while [ $i -le $2 ]; do {body} & pids=\"$pids $!\"; i=$((i+1)); done; \
                     rc=0; for p in $pids; do wait $p || rc=1; done; exit $rc"
                ),
                &[cfg.clone(), n.to_string()],
            )
        }
    };
    cmd.env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    Ok(cmd)
}
