//! Whether an address is one of this host's (in ingressd's network namespace).
//!
//! A VIP with no endpoint is left to the node's stack, which refuses its connections, only
//! when the VIP is the node's own address: the stack would route a packet for any other
//! address on, possibly back to the router that sent it here.
use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// Whether `ip` is assigned to an interface of this host; `false` if they cannot be read.
pub fn is_local(ip: IpAddr) -> bool {
    all().is_some_and(|a| a.contains(&ip))
}

/// Every address assigned to an interface of this host; `None` if they cannot be read
/// (out of file descriptors or memory: the call opens a netlink socket).
pub fn all() -> Option<BTreeSet<IpAddr>> {
    let mut found = BTreeSet::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return None;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, alive until freed.
        let ifa = unsafe { &*cur };
        found.extend(address(ifa.ifa_addr));
        cur = ifa.ifa_next;
    }
    // SAFETY: the list getifaddrs returned, freed once.
    unsafe { libc::freeifaddrs(head) };
    Some(found)
}

/// The IP address in a socket address of the list, if it holds one.
fn address(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: a non-null sockaddr of the list; its family says which layout it has.
    match i32::from(unsafe { (*sa).sa_family }) {
        libc::AF_INET => {
            // SAFETY: AF_INET entries are sockaddr_in.
            let sin = unsafe { &*(sa as *const libc::sockaddr_in) };
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                sin.sin_addr.s_addr,
            ))))
        }
        libc::AF_INET6 => {
            // SAFETY: AF_INET6 entries are sockaddr_in6.
            let sin6 = unsafe { &*(sa as *const libc::sockaddr_in6) };
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

/// The index of interface `name` in this thread's network namespace.
pub fn ifindex(name: &str) -> Option<u32> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: a valid NUL-terminated string; the call only reads it.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_local_and_a_documentation_address_is_not() {
        assert!(is_local(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert!(!is_local("192.0.2.77".parse().expect("address")));
        assert!(all().is_some_and(|a| a.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST))));
        assert_eq!(ifindex("lo"), Some(1));
        assert_eq!(ifindex("no-such-link"), None);
    }
}
