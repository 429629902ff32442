//! One connection of the embedded server: the accept loop, the faults applied before the
//! SSH session starts, and russh's handler ([`Connection`]): authentication (password,
//! keyboard-interactive, public key; `none` is always rejected) and the session channels'
//! requests (env, pty, exec, shell, subsystem); `direct-tcpip` opens go to [`super::forward`].
//!
//! Invariant: a channel runs at most one command: the request that launches it takes it
//! out of [`Connection::channels`], so later requests on it are refused (under
//! [`Fault::NeverReadChannels`](super::Fault::NeverReadChannels) it moves to
//! [`Connection::stalled`] instead, never read until the connection ends). Every accepted
//! connection is counted in [`Shared::counters`], and an active one sits in
//! [`Shared::conns`] exactly while its task runs.

use std::borrow::Cow;
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::server::{self, Auth, Msg, Session};
use russh::{Channel, ChannelId};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::exec::{run_command, Launch, PendingChannel};
use super::faults::FaultSet;
use super::forward::open_direct_tcpip;
use super::hostile::{endless_banner, garbage_after_banner};
use super::shared::{lock, Shared};
use super::socket::{ConnCtl, FaultStream};

/// Accepts connections until `shutdown` changes, each on a task of its own.
pub(super) async fn accept_loop(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    tokio::spawn(handle_connection(shared.clone(), stream, shutdown.clone()));
                }
                Err(e) => {
                    log::warn!("testbed: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
}

/// Counts a connection as active, and keeps it in [`Shared::conns`] under its id, until dropped.
struct ActiveGuard<'a>(&'a Shared, u64);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.counters.active.fetch_sub(1, Ordering::Relaxed);
        lock(&self.0.conns).remove(&self.1);
    }
}

/// One connection: its faults first (refuse, hold, delay), then the SSH session.
async fn handle_connection(shared: Arc<Shared>, stream: TcpStream, mut shutdown: watch::Receiver<bool>) {
    shared.counters.connections.fetch_add(1, Ordering::Relaxed);
    let faults = FaultSet::from_faults(&lock(&shared.faults));
    if faults.refuse {
        drop(stream);
        return;
    }
    if faults.no_banner {
        let _ = shutdown.wait_for(|stop| *stop).await;
        drop(stream);
        return;
    }
    if faults.endless_banner {
        return endless_banner(stream, shutdown).await;
    }
    if faults.garbage_after_banner {
        return garbage_after_banner(stream, shutdown).await;
    }
    if let Some(delay) = faults.delay {
        tokio::time::sleep(delay).await;
    }
    let _ = stream.set_nodelay(true);
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let ctl = Arc::new(ConnCtl {
        fd: stream.as_raw_fd(),
        open: Mutex::new(true),
        running: AtomicU64::new(0),
    });
    shared.counters.active.fetch_add(1, Ordering::Relaxed);
    lock(&shared.conns).insert(id, ctl.clone());
    let _guard = ActiveGuard(&shared, id);
    let stream = FaultStream {
        inner: stream,
        ctl: ctl.clone(),
        budget: faults.drop_after_bytes,
    };
    let config = if faults.sha1_only {
        shared.sha1_config.clone()
    } else if faults.zero_window {
        shared.zero_window_config.clone()
    } else {
        shared.config.clone()
    };
    let handler = Connection {
        shared: shared.clone(),
        ctl,
        faults,
        channels: HashMap::new(),
        stalled: Vec::new(),
    };
    match server::run_stream(config, stream, handler).await {
        Ok(session) => {
            if let Err(e) = session.await {
                log::debug!("testbed: session ended: {e}");
            }
        }
        Err(e) => log::debug!("testbed: handshake failed: {e}"),
    }
}

/// russh's handler of one connection: authentication, and the session channels' requests.
struct Connection {
    /// The server's state.
    shared: Arc<Shared>,
    /// This connection's socket control (cut by faults; counts its running commands).
    ctl: Arc<ConnCtl>,
    /// The faults in force when this connection was accepted.
    faults: FaultSet,
    /// Session channels opened and not yet launched; a launched or closed channel leaves.
    channels: HashMap<ChannelId, PendingChannel>,
    /// Channels whose command was accepted but never started ([`Fault::NeverReadChannels`](super::Fault::NeverReadChannels)):
    /// held unread, so russh's buffer for them fills and the connection stops reading.
    stalled: Vec<Channel<Msg>>,
}

impl Connection {
    /// The answer to an authentication whose credentials were `ok` (unless auth is rejected
    /// by a fault), counted.
    fn verdict(&self, ok: bool) -> Auth {
        if ok && !self.faults.reject_auth {
            self.shared.counters.authenticated.fetch_add(1, Ordering::Relaxed);
            Auth::Accept
        } else {
            self.shared.counters.auth_failures.fetch_add(1, Ordering::Relaxed);
            Auth::reject()
        }
    }

    /// Starts the command of a pending channel on a task of its own (or refuses an unknown
    /// channel); `label` is what [`Shared::commands`] records.
    fn launch(
        &mut self,
        id: ChannelId,
        launch: Launch,
        label: String,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        let Some(pending) = self.channels.remove(&id) else {
            session.channel_failure(id)?;
            return Ok(());
        };
        session.channel_success(id)?;
        if self.faults.never_read_channels {
            lock(&self.shared.commands).push(label);
            self.stalled.push(pending.channel);
            return Ok(());
        }
        self.shared.counters.commands.fetch_add(1, Ordering::Relaxed);
        self.ctl.running.fetch_add(1, Ordering::Relaxed);
        lock(&self.shared.commands).push(label);
        tokio::spawn(run_command(
            self.shared.clone(),
            self.ctl.clone(),
            self.faults.drop_during_command,
            session.handle(),
            pending,
            launch,
        ));
        Ok(())
    }

    /// Applies a request to a pending channel and answers success, or failure for a channel
    /// that is not pending (unknown, or already running its command).
    fn update_pending(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
        update: impl FnOnce(&mut PendingChannel),
    ) -> Result<(), russh::Error> {
        match self.channels.get_mut(&channel) {
            Some(pending) => {
                update(pending);
                session.channel_success(channel)?;
            }
            None => session.channel_failure(channel)?,
        }
        Ok(())
    }
}

impl server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        self.shared.counters.auth_failures.fetch_add(1, Ordering::Relaxed);
        self.shared.counters.none_probes.fetch_add(1, Ordering::Relaxed);
        Ok(Auth::reject())
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        Ok(self.verdict(self.shared.password_ok(user, password)))
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.shared.key_ok(user, offer.public_key) && !self.faults.reject_auth {
            Ok(Auth::Accept)
        } else {
            self.shared.counters.auth_failures.fetch_add(1, Ordering::Relaxed);
            Ok(Auth::reject())
        }
    }

    async fn auth_publickey(&mut self, user: &str, key: server::VerifiedPublicKey<'_>) -> Result<Auth, Self::Error> {
        Ok(self.verdict(self.shared.key_ok(user, key.public_key)))
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<server::Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        match response {
            None => Ok(Auth::Partial {
                name: Cow::Borrowed(""),
                instructions: Cow::Borrowed(""),
                prompts: Cow::Owned(vec![(Cow::Borrowed("Password: "), false)]),
            }),
            Some(mut answers) => {
                let answer = answers
                    .next()
                    .map(|a| String::from_utf8_lossy(&a).into_owned())
                    .unwrap_or_default();
                Ok(self.verdict(self.shared.password_ok(user, &answer)))
            }
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let c = &self.shared.counters;
        c.channels_opened.fetch_add(1, Ordering::Relaxed);
        if self.ctl.running.load(Ordering::Relaxed) > 0 {
            c.channels_opened_ahead.fetch_add(1, Ordering::Relaxed);
        }
        self.channels.insert(
            channel.id(),
            PendingChannel {
                channel,
                env: Vec::new(),
                term: None,
            },
        );
        reply.accept().await;
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        open_direct_tcpip(
            &self.shared,
            &self.faults,
            channel,
            host_to_connect,
            port_to_connect,
            reply,
        )
        .await;
        Ok(())
    }

    async fn channel_close(&mut self, channel: ChannelId, _session: &mut Session) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.update_pending(channel, session, |pending| {
            pending.env.push((name.to_string(), value.to_string()))
        })
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.update_pending(channel, session, |pending| pending.term = Some(term.to_string()))
    }

    async fn window_change_request(
        &mut self,
        _channel: ChannelId,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let label = String::from_utf8_lossy(data).into_owned();
        self.launch(channel, Launch::Exec(data.to_vec()), label, session)
    }

    async fn shell_request(&mut self, channel: ChannelId, session: &mut Session) -> Result<(), Self::Error> {
        self.launch(channel, Launch::Shell, "<shell>".into(), session)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let program = match name {
            "sftp" => [
                "/usr/lib/openssh/sftp-server",
                "/usr/libexec/openssh/sftp-server",
                "/usr/libexec/sftp-server",
            ]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists()),
            _ => None,
        };
        match program {
            Some(program) => self.launch(
                channel,
                Launch::Program(program),
                format!("<subsystem {name}>"),
                session,
            ),
            None => {
                session.channel_failure(channel)?;
                Ok(())
            }
        }
    }
}
