//! Counting the commands a request costs, from Redis' own statistics.
//!
//! A request that sends one command costs one round trip; `INFO
//! commandstats` deltas around a batch of requests show how many commands
//! each one sent. This is how the crate's "one round trip per session load"
//! is measured (the `redis_round_trips` test and the `redis_session`
//! bench).
//!
//! ```no_run
//! # async fn demo(backend: portcullis_redis::RedisBackend) -> Result<(), portcullis_core::StoreError> {
//! use portcullis_redis::testing::CommandStats;
//!
//! let before = CommandStats::snapshot(&backend).await?;
//! // ... serve 100 authenticated requests ...
//! let delta = CommandStats::snapshot(&backend).await?.since(&before);
//! assert_eq!(delta.calls("get"), 100);
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;

use deadpool_redis::redis::{self, Value};
use portcullis_core::StoreError;

use crate::backend::{Idempotent, Op, RedisBackend};

/// Calls per command, as `INFO commandstats` reports them (summed over the
/// nodes of a cluster).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandStats {
    calls: BTreeMap<String, u64>,
}

impl CommandStats {
    /// Reads `INFO commandstats` through `backend` (every node of a
    /// cluster). The `info` call itself is counted by Redis; [`total`]
    /// leaves it out.
    ///
    /// # Errors
    ///
    /// When Redis does not answer.
    ///
    /// [`total`]: CommandStats::total
    pub async fn snapshot(backend: &RedisBackend) -> Result<Self, StoreError> {
        let mut cmd = redis::cmd("INFO");
        cmd.arg("commandstats");
        let reply: Value = backend.run(Op::Cmd(&cmd), Idempotent::Yes).await?;
        let mut stats = Self::default();
        stats.add_reply(&reply);
        Ok(stats)
    }

    fn add_reply(&mut self, reply: &Value) {
        match reply {
            Value::BulkString(b) => self.add(&String::from_utf8_lossy(b)),
            Value::SimpleString(s) | Value::VerbatimString { text: s, .. } => self.add(s),
            Value::Map(nodes) => {
                for (_, v) in nodes {
                    self.add_reply(v);
                }
            }
            Value::Array(nodes) => {
                for v in nodes {
                    self.add_reply(v);
                }
            }
            _ => {}
        }
    }

    /// Parses the text of `INFO commandstats` (lines such as
    /// `cmdstat_get:calls=3,usec=10,...`).
    #[must_use]
    pub fn parse(info: &str) -> Self {
        let mut stats = Self::default();
        stats.add(info);
        stats
    }

    fn add(&mut self, info: &str) {
        for line in info.lines() {
            let Some(rest) = line.trim().strip_prefix("cmdstat_") else {
                continue;
            };
            let Some((name, fields)) = rest.split_once(':') else {
                continue;
            };
            let calls = fields
                .split(',')
                .find_map(|f| f.strip_prefix("calls="))
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
            *self.calls.entry(name.to_ascii_lowercase()).or_default() += calls;
        }
    }

    /// Calls of `command` (lower case; subcommands as `client|setinfo`).
    #[must_use]
    pub fn calls(&self, command: &str) -> u64 {
        self.calls.get(command).copied().unwrap_or(0)
    }

    /// Calls of every command but `info`.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.calls
            .iter()
            .filter(|(name, _)| name.as_str() != "info")
            .map(|(_, n)| n)
            .sum()
    }

    /// The calls made after `earlier` was taken.
    #[must_use]
    pub fn since(&self, earlier: &Self) -> Self {
        let calls = self
            .calls
            .iter()
            .map(|(name, n)| (name.clone(), n.saturating_sub(earlier.calls(name))))
            .filter(|(_, n)| *n > 0)
            .collect();
        Self { calls }
    }

    /// (command, calls) pairs, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.calls.iter().map(|(k, v)| (k.as_str(), *v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_subtracts() {
        let before = CommandStats::parse(
            "# Commandstats\r\ncmdstat_hgetall:calls=5,usec=9,usec_per_call=1.8\r\ncmdstat_info:calls=1,usec=1\r\n",
        );
        let after = CommandStats::parse(
            "# Commandstats\r\ncmdstat_hgetall:calls=105,usec=9\r\ncmdstat_info:calls=2,usec=1\r\ncmdstat_client|setinfo:calls=2,usec=1\r\n",
        );
        let delta = after.since(&before);
        assert_eq!(delta.calls("hgetall"), 100);
        assert_eq!(delta.calls("client|setinfo"), 2);
        assert_eq!(delta.calls("info"), 1);
        assert_eq!(delta.total(), 102);
        let mut cluster = CommandStats::default();
        cluster.add_reply(&Value::Map(vec![
            (
                Value::SimpleString("a".into()),
                Value::BulkString(b"cmdstat_get:calls=1,usec=1".to_vec()),
            ),
            (
                Value::SimpleString("b".into()),
                Value::BulkString(b"cmdstat_get:calls=2,usec=1".to_vec()),
            ),
        ]));
        assert_eq!(cluster.calls("get"), 3);
    }
}
