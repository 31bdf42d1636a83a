//! Throwaway redis-server processes for tests (work in progress).
