//! The faults the embedded server can inject ([`Fault`]) and their per-connection form
//! ([`FaultSet`]).
//!
//! Invariant: the fault list is read once, when a connection is accepted; a change made
//! with [`EmbeddedServer::set_faults`](super::EmbeddedServer::set_faults) applies to the
//! connections accepted after it, never to those already open.

use std::time::Duration;

/// A fault the embedded server injects into every connection accepted while it is set.
///
/// Several faults can be combined (e.g. a handshake delay and rejected authentication).
/// Change them at run time with [`EmbeddedServer::set_faults`](super::EmbeddedServer::set_faults).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Accept the TCP connection and close it at once, before the banner: the client's
    /// handshake fails.
    RefuseHandshake,
    /// Wait this long after accepting the TCP connection before starting the SSH protocol.
    DelayHandshake(Duration),
    /// Reject every authentication attempt (every method, every user).
    RejectAuth,
    /// Close the connection (shutdown of the socket) once this many bytes, counted from
    /// the server's banner on, have been sent to the client.
    DropAfterBytes(u64),
    /// Close the connection this long after a command (exec, shell or subsystem) started.
    /// The command's processes are killed.
    DropDuringCommand(Duration),
    /// Accept the TCP connection and never send anything (no banner) until the server stops.
    NoBanner,
    /// Offer only SHA-1 key exchange (`diffie-hellman-group14-sha1`, `-group1-sha1`) and
    /// `hmac-sha1`: clients without SHA-1 (libssh2 as vendored by `ssh2`) cannot connect.
    Sha1Only,
    /// Send text lines forever instead of a banner (none starts with `SSH-`), until the
    /// client closes the connection or the server stops: a client must give up by its own
    /// deadline.
    EndlessBanner,
    /// Send a valid banner, then bytes that are no SSH packet (a packet length far beyond
    /// any limit), and then nothing more while the connection stays open.
    GarbageAfterBanner,
    /// Accept session channels and answer their requests, but never run a command and never
    /// read their data: once russh's buffer for the channel is full, the whole connection
    /// stops reading, so a client sending stdin sees its writes block for good.
    NeverReadChannels,
    /// Open every channel with a window of 0 bytes and never enlarge it: the client cannot
    /// send a byte of channel data (commands still run and their output still flows).
    /// With [`Fault::Sha1Only`] too, only `Sha1Only` applies.
    ZeroWindow,
    /// Refuse every `direct-tcpip` channel open as administratively prohibited (a jump
    /// host whose `AllowTcpForwarding` is off).
    RefuseForwarding,
    /// Cut every forwarded connection (`direct-tcpip` channel) once this many bytes have
    /// gone from its target to the client: the channel is closed without EOF and the
    /// target's socket is closed. The SSH connection itself stays up.
    DropForwardAfterBytes(u64),
    /// Answer each `direct-tcpip` open only this long after it arrived (opens overlap, as
    /// on a network): a distant jump host, where every open costs a round trip.
    DelayForwardOpen(Duration),
}

/// The faults of one connection, as flags (read once when it is accepted).
#[derive(Debug, Clone, Default)]
pub(super) struct FaultSet {
    /// [`Fault::RefuseHandshake`].
    pub(super) refuse: bool,
    /// [`Fault::DelayHandshake`].
    pub(super) delay: Option<Duration>,
    /// [`Fault::RejectAuth`].
    pub(super) reject_auth: bool,
    /// [`Fault::DropAfterBytes`].
    pub(super) drop_after_bytes: Option<u64>,
    /// [`Fault::DropDuringCommand`].
    pub(super) drop_during_command: Option<Duration>,
    /// [`Fault::NoBanner`].
    pub(super) no_banner: bool,
    /// [`Fault::Sha1Only`].
    pub(super) sha1_only: bool,
    /// [`Fault::EndlessBanner`].
    pub(super) endless_banner: bool,
    /// [`Fault::GarbageAfterBanner`].
    pub(super) garbage_after_banner: bool,
    /// [`Fault::NeverReadChannels`].
    pub(super) never_read_channels: bool,
    /// [`Fault::ZeroWindow`].
    pub(super) zero_window: bool,
    /// [`Fault::RefuseForwarding`].
    pub(super) refuse_forwarding: bool,
    /// [`Fault::DropForwardAfterBytes`].
    pub(super) drop_forward_after_bytes: Option<u64>,
    /// [`Fault::DelayForwardOpen`].
    pub(super) delay_forward_open: Option<Duration>,
}

impl FaultSet {
    /// Folds a fault list; for a fault given twice, the last one's value wins.
    pub(super) fn from_faults(faults: &[Fault]) -> FaultSet {
        let mut set = FaultSet::default();
        for fault in faults {
            match fault {
                Fault::RefuseHandshake => set.refuse = true,
                Fault::DelayHandshake(d) => set.delay = Some(*d),
                Fault::RejectAuth => set.reject_auth = true,
                Fault::DropAfterBytes(n) => set.drop_after_bytes = Some(*n),
                Fault::DropDuringCommand(d) => set.drop_during_command = Some(*d),
                Fault::NoBanner => set.no_banner = true,
                Fault::Sha1Only => set.sha1_only = true,
                Fault::EndlessBanner => set.endless_banner = true,
                Fault::GarbageAfterBanner => set.garbage_after_banner = true,
                Fault::NeverReadChannels => set.never_read_channels = true,
                Fault::ZeroWindow => set.zero_window = true,
                Fault::RefuseForwarding => set.refuse_forwarding = true,
                Fault::DropForwardAfterBytes(n) => set.drop_forward_after_bytes = Some(*n),
                Fault::DelayForwardOpen(d) => set.delay_forward_open = Some(*d),
            }
        }
        set
    }
}
