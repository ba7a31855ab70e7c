//! Pinned maps: adopted by the next process of the same layout version, replaced (and the old
//! version removed) when the layout version differs, all removed by cleanup.
use ingress::{
    apply::maps::{L4Applier, SnatSettings},
    maps::{
        loader::{cleanup, maps_dir, Datapath, LoaderOptions},
        MapWriter,
    },
    snapshot::{L4Protocol, L4Service, ObjectRef},
};
use ingress_common::conntrack::buckets_for;

fn opts(dir: &std::path::Path) -> LoaderOptions {
    LoaderOptions {
        pin_dir: Some(dir.to_path_buf()),
        max_vips: 4,
        conntrack_entries: 1024,
        kernel_log: false,
    }
}

fn snat() -> SnatSettings {
    SnatSettings {
        v4: Some("198.18.255.1".parse().unwrap()),
        v6: None,
        port_min: 20000,
        port_max: 20999,
        timeouts: Default::default(),
    }
}

#[test]
fn pinned_maps_are_adopted_by_version_and_stale_versions_removed() {
    tests::netns::require_privileges().expect("privileged test");
    let dir = std::path::PathBuf::from("/sys/fs/bpf").join(tests::netns::owned("pins", "maps"));
    let svc = L4Service {
        origin: ObjectRef::default(),
        vip: "198.19.0.10".parse().unwrap(),
        port: 80,
        protocol: L4Protocol::Tcp,
        backends: vec!["198.18.1.2:8080".parse().unwrap()],
    };
    {
        let mut dp = Datapath::load(&opts(&dir)).unwrap();
        let mut a = L4Applier::new(dp.map_writer().unwrap(), snat()).unwrap();
        a.apply(std::slice::from_ref(&svc)).unwrap();
    }
    // Same version: the next process sees the VIP that is already programmed.
    {
        let mut dp = Datapath::load(&opts(&dir)).unwrap();
        assert!(dp.capacity_mismatches().is_empty());
        let state = dp.map_writer().unwrap().read_state().unwrap();
        assert_eq!(state.vips.len(), 1, "pinned VIP adopted");
        assert_eq!(state.backends.len(), 1);
    }
    // A bigger conntrack asked of a node with pinned maps: they are kept (live flows) and
    // the difference is reported, not silently ignored.
    {
        let bigger = LoaderOptions {
            conntrack_entries: 4096,
            ..opts(&dir)
        };
        let mut dp = Datapath::load(&bigger).unwrap();
        let names: Vec<_> = dp
            .capacity_mismatches()
            .iter()
            .map(|m| (m.map, m.pinned, m.wanted))
            .collect();
        let (pinned, wanted) = (buckets_for(1024), buckets_for(4096));
        assert_eq!(
            names,
            vec![("CONNTRACK", pinned, wanted), ("REPLY_NAT", pinned, wanted)]
        );
        let state = dp.map_writer().unwrap().read_state().unwrap();
        assert_eq!(state.vips.len(), 1, "state kept");
    }
    // Pretend the pinned maps are of an older layout.
    let current = maps_dir(&dir);
    let old = dir.join("maps_v0");
    std::fs::rename(&current, &old).unwrap();
    {
        let mut dp = Datapath::load(&opts(&dir)).unwrap();
        let state = dp.map_writer().unwrap().read_state().unwrap();
        assert!(
            state.vips.is_empty(),
            "maps of another version must not be adopted"
        );
        dp.remove_stale_versions().unwrap();
        assert!(!old.exists(), "old version removed");
        assert!(current.exists());
    }
    let removed = cleanup(&dir).unwrap();
    assert!(!removed.is_empty());
    assert!(!dir.exists());
    assert!(cleanup(&dir).unwrap().is_empty(), "cleanup is idempotent");
}

/// Native XDP where the driver has it (veth), generic (skb) mode with a warning where it does
/// not (the loopback device), without the operator asking.
#[test]
fn native_attach_falls_back_to_generic_where_the_driver_lacks_xdp() {
    tests::netns::require_privileges().expect("privileged test");
    let ns = tests::netns::NetNs::new("xg").expect("namespace");
    for cmd in [
        "ip link set lo up",
        "ip link add v0 type veth peer name v1",
        "ip link set v0 up",
        "ip link set v1 up",
    ] {
        ns.run(cmd).expect(cmd);
    }
    let guard = ns.enter().expect("enter namespace");
    let mut dp = Datapath::load(&LoaderOptions {
        pin_dir: None,
        max_vips: 4,
        conntrack_entries: 1024,
        kernel_log: false,
    })
    .expect("load");
    assert_eq!(
        dp.attach("lo", false).expect("attach lo"),
        aya::programs::XdpMode::Skb
    );
    assert_eq!(
        dp.attach("v0", false).expect("attach v0"),
        aya::programs::XdpMode::Driver
    );
    let shown = ns.run("ip -d link show").expect("ip link");
    let line = |name: &str| {
        shown
            .lines()
            .find(|l| l.contains(&format!(": {name}:")) || l.contains(&format!(": {name}@")))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("lo").contains("xdpgeneric"), "{shown}");
    assert!(
        line("v0").contains("xdp ") || line("v0").contains("xdp/"),
        "{shown}"
    );
    drop(dp);
    drop(guard);
}

/// Pinned links across restarts: the link of an interface deleted and made again cannot take
/// the new program (the kernel refuses the update) and is replaced by a fresh attach instead
/// of failing startup; an interface dropped from the configuration is detached, not left
/// forwarding with the old program.
#[test]
fn pinned_links_of_recreated_and_dropped_interfaces() {
    tests::netns::require_privileges().expect("privileged test");
    let dir = std::path::PathBuf::from("/sys/fs/bpf").join(tests::netns::owned("pins", "links"));
    let ns = tests::netns::NetNs::new("xl").expect("namespace");
    let veth = |name: &str| {
        for cmd in [
            format!("ip link add {name}0 type veth peer name {name}1"),
            format!("ip link set {name}0 up"),
            format!("ip link set {name}1 up"),
        ] {
            ns.run(&cmd).expect(&cmd);
        }
    };
    veth("a");
    veth("b");
    let guard = ns.enter().expect("enter namespace");
    let shown = || ns.run("ip -d link show").expect("ip link");
    let has_xdp = |text: &str, name: &str| {
        text.lines()
            .find(|l| l.contains(&format!(": {name}@")))
            .is_some_and(|l| l.contains("xdp"))
    };
    {
        let mut dp = Datapath::load(&opts(&dir)).expect("load");
        dp.attach("a0", false).expect("attach a0");
        dp.attach("b0", false).expect("attach b0");
    }
    let before = shown();
    assert!(has_xdp(&before, "a0") && has_xdp(&before, "b0"), "{before}");

    ns.run("ip link del a0").expect("delete a0");
    veth("a");
    {
        let mut dp = Datapath::load(&opts(&dir)).expect("load again");
        dp.attach("a0", false)
            .expect("attach to the recreated a0 despite its dead pinned link");
        let gone = dp
            .detach_others(&["a0".to_string()])
            .expect("detach others");
        assert_eq!(gone, ["b0"]);
    }
    let after = shown();
    assert!(
        has_xdp(&after, "a0"),
        "recreated a0 has the program: {after}"
    );
    assert!(
        !has_xdp(&after, "b0"),
        "dropped b0 still has a program: {after}"
    );
    assert!(!dir.join("links/xdp_b0").exists());
    drop(guard);
    cleanup(&dir).expect("cleanup");
    assert!(!dir.exists());
}
