//! Admin HTTP endpoint: /healthz, /readyz, /metrics, and the inspect report.
