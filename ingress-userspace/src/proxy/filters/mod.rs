//! Annotation behaviours, one module per phase, applied by the request pipeline in
//! ingress-nginx's order: redirects (rewrite phase), rate limit (preaccess), source ranges
//! (access), CORS preflight, basic auth, then the upstream-side ones (canary, affinity,
//! hash, rewrite, custom errors).
pub mod access;
pub mod affinity;
pub mod auth;
pub mod canary;
pub mod client_cert;
pub mod connlimit;
pub mod cookie_rewrite;
pub mod cors;
pub mod custom_errors;
pub mod external_auth;
pub mod hash;
pub mod mirror;
pub mod ratelimit;
pub mod redirect;
pub mod rewrite;
