//! The secret scan: every tracing line and auth event of the suite, recorded for scripts/secret-scan.
