//! Brute-force protection for login and refresh routes.
