//! The two SSH servers every over-SSH scenario runs against: the embedded
//! russh server (always) and OpenSSH's sshd (a missing sshd or root fails the
//! test, or skips it loudly with `TESTBED_ALLOW_SKIP=1`: see `testbed::prereq`).
//!
//! Include with `#[path = "common/servers.rs"] mod servers;` and generate one
//! test per server with [`on_both!`].
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use ssh_parallel::{Host, HostKeyCheck};
use testbed::{ClientKey, EmbeddedServer, OpenSshServer};

pub const USER: &str = "alice";
pub const PASSWORD: &str = "wonderland";

/// A server under test. The embedded one takes `USER`/`PASSWORD`; sshd takes
/// a throwaway key for the user running the tests.
pub enum Server {
    Embedded(Box<EmbeddedServer>),
    OpenSsh(Box<(OpenSshServer, ClientKey)>),
}

impl Server {
    pub fn embedded() -> Server {
        testbed::raise_fd_limit();
        Server::Embedded(Box::new(
            EmbeddedServer::builder()
                .password(USER, PASSWORD)
                .start()
                .expect("start the embedded server"),
        ))
    }

    /// `None` (the test is skipped, loudly) only when sshd cannot run here and
    /// skipping is allowed (`testbed::prereq`); otherwise the test fails.
    pub fn openssh() -> Option<Server> {
        if !testbed::prereq::sshd() {
            return None;
        }
        let key = ClientKey::ed25519().expect("generate a client key");
        let sshd = OpenSshServer::builder().authorize(&key).start().expect("start sshd");
        Some(Server::OpenSsh(Box::new((sshd, key))))
    }

    /// Both servers (sshd only where it can run, when skipping is allowed).
    pub fn both() -> Vec<Server> {
        let mut v = vec![Server::embedded()];
        v.extend(Server::openssh());
        v
    }

    pub fn name(&self) -> &'static str {
        match self {
            Server::Embedded(_) => "embedded",
            Server::OpenSsh(_) => "openssh",
        }
    }

    pub fn addr(&self) -> SocketAddr {
        match self {
            Server::Embedded(s) => s.addr(),
            Server::OpenSsh(b) => SocketAddr::from(([127, 0, 0, 1], b.0.port)),
        }
    }

    /// A host logging in to this server (through `port`, say a proxy's).
    pub fn host_via(&self, port: u16) -> Host {
        let h = Host::new("127.0.0.1")
            .port(port)
            .agent(false)
            .host_key_check(HostKeyCheck::Off)
            .connect_timeout(Duration::from_secs(10));
        match self {
            Server::Embedded(_) => h.user(USER).password(PASSWORD),
            Server::OpenSsh(b) => h.user(testbed::current_user()).key_file(b.1.private_path()),
        }
    }

    pub fn host(&self) -> Host {
        self.host_via(self.addr().port())
    }

    /// Logins so far (one per SSH connection on both servers).
    pub fn logins(&self) -> usize {
        match self {
            Server::Embedded(s) => s.stats().connections as usize,
            Server::OpenSsh(b) => b.0.log().matches("Accepted publickey").count(),
        }
    }
}

/// A host logging in with `USER`/`PASSWORD` to an embedded server on
/// 127.0.0.1:`port`, whose throwaway key goes unchecked (the OpenSSH tier
/// checks host keys), within 5 s.
pub fn password_host(port: u16) -> Host {
    Host::new("127.0.0.1")
        .port(port)
        .user(USER)
        .password(PASSWORD)
        .host_key_check(HostKeyCheck::Off)
        .connect_timeout(Duration::from_secs(5))
}

/// One `#[test]` per server for each scenario `fn(&Server)`:
/// `embedded::NAME` and `openssh::NAME`.
#[macro_export]
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(#[test] fn $name() { super::$name(&super::servers::Server::embedded()) })*
        }
        mod openssh {
            $(#[test] fn $name() {
                if let Some(s) = super::servers::Server::openssh() { super::$name(&s) }
            })*
        }
    };
}
