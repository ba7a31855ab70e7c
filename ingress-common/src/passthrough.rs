//! TLS passthrough splice: sockets paired in a sockhash so the kernel moves bytes between them.

/// Value of the peer table: where this socket's bytes go, and how many went there.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SplicePeer {
    /// Socket cookie of the peer socket (its key in the sockhash).
    pub peer_cookie: u64,
    /// Bytes the verdict program redirected from this socket to the peer (atomic add in the
    /// kernel). Userspace compares it with what the peer has sent before propagating a FIN,
    /// so the kernel's redirect queue is drained first.
    pub redirected: u64,
    /// Bytes the verdict program passed to this socket's own receive queue instead (the
    /// credit was spent): userspace relays them, in order, after the redirected ones.
    pub passed: u64,
}

const _: () = assert!(core::mem::size_of::<SplicePeer>() == 24);

/// Value of the credit table, written by userspace only (the peer table has the kernel's
/// counts): how far the verdict program may redirect a socket's bytes.
///
/// The kernel queues redirected bytes for the peer without bound, so a reader slower than
/// the sender would let a connection hold any amount of kernel memory. Redirecting stops
/// once `redirected` would pass `limit` (userspace keeps it a budget ahead of what the peer
/// has taken), and stays stopped until userspace has relayed every passed byte.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SpliceCredit {
    /// Redirected-byte count this socket may reach.
    pub limit: u64,
    /// Passed bytes userspace has read and written to the peer.
    pub consumed: u64,
}

const _: () = assert!(core::mem::size_of::<SpliceCredit>() == 16);
