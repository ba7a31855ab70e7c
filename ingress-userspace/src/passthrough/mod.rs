//! TLS passthrough: SNI peek, backend choice, and the in-kernel splice (or its userspace fallback).
