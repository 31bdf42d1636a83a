//! The audit trail: audit events as JSON lines, and the last events of
//! each user.
