//! Connection tracking: forward flows (client -> VIP) and their reverse NAT entries.

/// A flow 5-tuple as seen on the wire; addresses and ports in network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FlowKey {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: u16,
}

/// A cached next hop: egress interface and MACs from `bpf_fib_lookup`, and when it was
/// looked up (`bpf_jiffies64`; 0 = never). Trusted for `HOP_TTL_JIFFIES`, so a route or
/// neighbour change takes effect within that time without a lookup per packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Hop {
    pub ifindex: u32,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    /// Low 32 bits of `bpf_jiffies64` at the lookup (compared with wrapping arithmetic).
    pub stamp_jiffies: u32,
}

/// How long a cached next hop is used before it is looked up again, in jiffies: 1.02 s at
/// HZ=250, 2.56 s at HZ=100, 0.26 s at HZ=1000. Jiffies because the verifier inlines
/// `bpf_jiffies64` into one load, where a nanosecond clock is a helper call costing ~15 ns
/// of a ~125 ns conntrack hit; the kernel's HZ is not known when the program is built, and
/// any of these bounds is short enough for a route change and long enough to be cheap.
pub const HOP_TTL_JIFFIES: u32 = 256;

/// `seen` of a flow entry: the seconds part (coarse monotonic clock, wrapping in 29 bits).
pub const SEEN_SECS: u32 = (1 << 29) - 1;
/// `seen` of a reply entry: the backend has answered (a packet came back through it). Until
/// then the flow is held only for `LbConfig::unreplied_secs` of quiet, so a flood of SYNs
/// or one-way datagrams to a VIP cannot hold SNAT ports for the established timeout.
pub const SEEN_REPLIED: u32 = 1 << 29;
/// The flag bits of `seen`: they stay set once set.
pub const SEEN_FLAGS: u32 = !SEEN_SECS;
/// `seen` of a flow entry: a FIN was seen in this direction.
pub const SEEN_FIN: u32 = 1 << 30;
/// `seen` of a flow entry: an RST was seen in this direction.
pub const SEEN_RST: u32 = 1 << 31;

/// Forward translation of a client flow: where it goes and which source it wears.
///
/// The backend address is copied here, not referenced by id, so an established flow keeps
/// its backend even when the backend table changes under it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowNat {
    pub backend: [u32; 4],
    pub snat: [u32; 4],
    /// Backend port, network byte order.
    pub backend_port: u16,
    /// Source port after SNAT, network byte order.
    pub snat_port: u16,
    pub vip_id: u32,
    /// Next hop towards the backend.
    pub hop: Hop,
    /// When a packet of this direction was last seen, to within the hop TTL (refreshed with
    /// the hop, and on FIN or RST), and the `SEEN_FIN`/`SEEN_RST` (and, in reply entries,
    /// `SEEN_REPLIED`) bits: what decides when the flow's SNAT port may go to another flow.
    pub seen: u32,
}

/// Reverse translation for replies arriving from a backend to the SNAT address and port.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ReplyNat {
    pub client: [u32; 4],
    pub vip: [u32; 4],
    /// Client port, network byte order.
    pub client_port: u16,
    /// VIP port, network byte order.
    pub vip_port: u16,
    pub vip_id: u32,
    /// Next hop towards the client.
    pub hop: Hop,
    /// As `FlowNat::seen`, for the reply direction.
    pub seen: u32,
}

const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);
const _: () = assert!(core::mem::size_of::<Hop>() == 20);
const _: () = assert!(core::mem::size_of::<FlowNat>() == 64);
const _: () = assert!(core::mem::size_of::<ReplyNat>() == 64);
