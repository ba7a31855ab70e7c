//! TLS passthrough: SNI peek, kernel splice and userspace copy, end to end on loopback.
use ingress::passthrough::{splice::SpliceEngine, Passthrough, PassthroughConfig};

#[tokio::test]
async fn kernel_splice_self_test_passes() {
    let engine = SpliceEngine::new().expect("load the sk_skb program (needs root and BPF)");
    engine.self_test().await.expect("self-test");
    assert_eq!(engine.map_entries(), (0, 0));
    let pt = Passthrough::start(PassthroughConfig::default()).await;
    assert!(pt.is_kernel_splice());
}
