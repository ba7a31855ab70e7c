//! Verdicts and drop reasons: one enum, counted per CPU by the kernel, named for metrics.

/// A packet and byte count, one slot per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

const _: () = assert!(core::mem::size_of::<Counter>() == 16);

macro_rules! stats {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, )*) => {
        /// Every outcome of the kernel programs, verdicts and drop reasons alike.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Stat { $( $(#[$doc])* $variant, )* }

        impl Stat {
            /// All variants in index order.
            pub const ALL: &'static [Stat] = &[ $( Stat::$variant, )* ];
            /// Stable metric label.
            pub const fn name(self) -> &'static str {
                match self { $( Stat::$variant => $name, )* }
            }
            /// Whether this outcome drops the packet.
            pub const fn is_drop(self) -> bool {
                let n = self.name().as_bytes();
                n.len() > 5 && n[0] == b'd' && n[1] == b'r' && n[2] == b'o' && n[3] == b'p'
            }
        }
    };
}

stats! {
    /// Not IPv4/IPv6 (ARP, LLDP, ...): passed.
    PassNotIp = "pass_not_ip",
    /// IP header too short to tell where the packet goes: passed.
    PassUnparsed = "pass_unparsed",
    /// IP but not addressed to a VIP or a SNAT reply: passed.
    PassNotOurs = "pass_not_ours",
    /// IPv6 with extension headers before L4: passed to the stack.
    PassIpv6Ext = "pass_ipv6_ext",
    /// IPv4 fragment to a VIP address: passed, ports unknown.
    PassFragment = "pass_fragment",
    /// TTL or hop limit would expire: passed so the stack answers with ICMP.
    PassTtl = "pass_ttl",
    /// Neighbour of the next hop unknown: passed so the stack resolves it.
    PassNoNeigh = "pass_no_neigh",
    /// Tagged frame whose route leaves by another interface: passed to the stack.
    PassVlanEgress = "pass_vlan_egress",
    /// Route lookup failed or not forwardable: passed to the stack.
    PassFibMiss = "pass_fib_miss",
    /// L4 path not configured yet: passed.
    PassNotReady = "pass_not_ready",
    /// A reply too big for its egress link, IPv4 without DF: passed translated, for the stack
    /// to fragment (XDP cannot).
    PassTooBig = "pass_too_big",
    /// To a protected listener, past the edge checks: passed to the stack.
    PassEdgeChecked = "pass_edge_checked",
    /// New flow: backend picked by Maglev, NATed and forwarded.
    FwdNewFlow = "fwd_new_flow",
    /// Established flow found in conntrack, NATed and forwarded.
    FwdConntrack = "fwd_conntrack",
    /// Reply from a backend, reverse-NATed and forwarded.
    FwdReply = "fwd_reply",
    /// ICMP error about a NATed flow (unreachable, too big, time exceeded), translated like
    /// the flow and forwarded to its client or backend.
    FwdIcmp = "fwd_icmp",
    /// Forwarded out of the interface it came in on.
    Tx = "tx",
    /// Forwarded out of another interface.
    Redirect = "redirect",
    /// Too big for its egress link (and not to be fragmented): answered with ICMP "too big"
    /// (fragmentation needed, packet too big) to its sender, which lowers its path MTU.
    IcmpTooBig = "icmp_too_big",
    /// A new flow took over the SNAT port of an expired flow (counted besides its verdict).
    NatPortReused = "nat_port_reused",
    /// A UDP flow whose backend left its VIP was moved to another backend (counted besides
    /// its verdict).
    FlowBackendGone = "flow_backend_gone",
    /// Headers to a VIP truncated or inconsistent.
    DropMalformed = "drop_malformed",
    /// VIP has no backend.
    DropNoBackend = "drop_no_backend",
    /// No free SNAT port for this backend.
    DropNatExhausted = "drop_nat_exhausted",
    /// A map update failed (conntrack full or kernel error).
    DropMapError = "drop_map_error",
    /// Too big for its egress link: a client's IPv4 packet without DF (XDP cannot fragment,
    /// and the stack cannot take it translated), or one whose "too big" answer failed.
    DropTooBig = "drop_too_big",
    /// Edge protection: a packet to a protected destination from a blocked source.
    DropBlocked = "drop_blocked",
    /// Edge protection: a SYN (or a datagram starting a UDP flow) over its source's
    /// new-connection rate.
    DropSynRate = "drop_syn_rate",
    /// TLS passthrough splice (`sk_passthrough`, counted per skb): bytes on a socket of the
    /// sockhash with no peer recorded (never paired, or unpaired by userspace).
    DropSpliceUnpaired = "drop_splice_unpaired",
    /// TLS passthrough splice: bytes whose peer socket has left the sockhash (it closed or
    /// was reset); userspace resets the other side.
    DropSplicePeerGone = "drop_splice_peer_gone",
    /// TLS passthrough splice: bytes held back for userspace to relay because the peer had
    /// not taken enough of what was redirected to it (or earlier bytes were still held).
    SpliceHeld = "splice_held",
    /// TLS passthrough splice: bytes that began a hold whose notice did not fit in the ring
    /// buffer; userspace's periodic sweep finds them.
    SpliceHeldUnnotified = "splice_held_unnotified",
}

/// Number of counter slots.
pub const STAT_COUNT: u32 = Stat::ALL.len() as u32;

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn names_are_unique_and_drop_prefix_matches() {
        let mut names: std::vec::Vec<_> = Stat::ALL.iter().map(|s| s.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Stat::ALL.len());
        assert!(Stat::DropMalformed.is_drop());
        assert!(!Stat::PassNotIp.is_drop());
        assert_eq!(Stat::ALL[Stat::FwdReply as usize], Stat::FwdReply);
    }
}
