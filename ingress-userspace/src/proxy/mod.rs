//! The L7 proxy: listeners, TLS termination, routing, upstreams, and error responses.
