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
}

const _: () = assert!(core::mem::size_of::<SplicePeer>() == 16);
