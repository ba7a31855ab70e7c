//! TLS passthrough splice: sockets paired in a sockhash so the kernel moves bytes between them.

/// Value of the peer table: the sockhash key of the socket that receives this socket's bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SplicePeer {
    /// Socket cookie of the peer socket (its key in the sockhash).
    pub peer_cookie: u64,
}

const _: () = assert!(core::mem::size_of::<SplicePeer>() == 8);
