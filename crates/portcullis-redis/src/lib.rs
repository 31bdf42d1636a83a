// Over 500 lines: nearly all of it the crate's documentation, one guide read
// from top to bottom; the code is in its modules.
//! Redis stores for the portcullis layers, for applications that run many
//! instances behind a load balancer: every instance sees the same sessions
//! and refresh-token families, a logout on one is refused on all others at
//! once, a JWT revoked on one is refused on all others within milliseconds
//! (with no Redis call per request), and a Redis outage answers 503 (never
//! "logged out") within a bounded time.
//!
//! ```no_run
//! use portcullis_redis::{RedisConfig, RedisSessionStore};
//! use portcullis_session::{SessionConfig, SessionLayer};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let backend = RedisConfig::new("redis://127.0.0.1:6379/")
//!     .key_prefix("myapp")
//!     .build()?; // connects lazily: starts even while Redis is down
//! let store = RedisSessionStore::new(backend);
//! let layer = SessionLayer::new(store, SessionConfig::default())?;
//! # let _ = layer;
//! # Ok(()) }
//! ```
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `session` | yes | `RedisSessionStore`, a `portcullis_session::SessionStore` |
//! | `jwt` | no | `RedisRevocationStore`, a `portcullis_jwt::revocation::RevocationStore` whose in-process view Redis pub/sub keeps current; `RedisReplayCache`, the DPoP proof replay cache (`portcullis_jwt::dpop::ReplayCache`) |
//! | `refresh` | no | `RedisRefreshStore`, a `portcullis_refresh::RefreshStore` (turns on `jwt`: a refresh store shared by instances needs a shared revocation view) |
//! | `throttle` | no | `RedisThrottleStore`, the login throttle's counters (`portcullis_throttle::ThrottleStore`; see the `throttle` module) |
//! | `cluster` | no | `RedisConfig::cluster`: Redis Cluster targets |
//! | `tls` | no | `rediss://` (and `valkeys://`) URLs: TLS with rustls on the aws-lc-rs provider, the system's roots or `RedisConfig::tls_root_ca_pem` (see [TLS](#tls)) |
//! | `testing` | no | `testing::CommandStats`: count the commands a request costs |
//! | `tracing` | no | debug/warn events on connection loss and timeouts (never a key, token or session data) |
//!
//! Every store is built on a [`RedisBackend`]; stores of one application
//! can share one (one connection, one key prefix).
//!
//! # Connection and timeouts
//!
//! A [`RedisBackend`] holds **one multiplexed connection** that every
//! concurrent call shares (requests are pipelined on the wire, which is how
//! Redis is fastest). There is no per-call checkout and so no per-call
//! health check: a `deadpool-redis` pool sends `UNWATCH` + `PING` on every
//! checkout, a second round trip per call (measured: 3 commands, 2 round
//! trips per session load through a pool; 1 command, 1 round trip through
//! the multiplexed connection; [`RedisConfig::from_pool`] remains for
//! applications that must share their pool).
//!
//! | setting | default | |
//! |---|---|---|
//! | [`timeout`](RedisConfig::timeout) | 250 ms | bound on every Redis call, connecting included: then [`StoreError::timeout`](portcullis_core::StoreError::timeout), and the layers answer 503 |
//! | [`reconnect_backoff`](RedisConfig::reconnect_backoff) | 100 ms | after a failed connection attempt, calls fail at once (503) for this long |
//!
//! A call that fails on the connection (I/O error, timeout) drops it; the
//! next call connects again (one attempt at a time, the others wait for
//! it), so service resumes by itself when Redis returns. A call that is
//! safe to repeat and failed on a broken connection, such as the one a
//! restarted Redis closed, is sent once more on a new connection within the
//! same time bound: every call but the session store's `delete` and the
//! revocation store's `revoke_user` (see [which calls are
//! resent](#which-calls-are-resent)). Nothing panics on any reply:
//! unexpected ones are errors.
//!
//! # TLS
//!
//! With the `tls` feature, a `rediss://` URL (`valkeys://` for Valkey)
//! connects over TLS: rustls with the aws-lc-rs provider, no OpenSSL.
//!
//! ```no_run
//! # #[cfg(feature = "tls")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use portcullis_redis::RedisConfig;
//!
//! // A certificate from a public CA: the system's roots verify it.
//! let managed = RedisConfig::new("rediss://:password@redis.example.com:6380/").build()?;
//! // A private CA: trust it, and only it.
//! let private = RedisConfig::new("rediss://app:password@redis.internal:6380/")
//!     .tls_root_ca_pem(std::fs::read("/etc/myapp/redis-ca.pem")?)
//!     .build()?;
//! # let _ = (managed, private);
//! # Ok(()) }
//! # #[cfg(not(feature = "tls"))]
//! # fn main() {}
//! ```
//!
//! - **The server is verified**: its certificate must chain to a trusted
//!   root and name the URL's host (a DNS name or an IP address). The roots
//!   are the system's (read when connecting: on Debian the
//!   `ca-certificates` bundle, or `SSL_CERT_FILE` / `SSL_CERT_DIR` when
//!   set), or only the CAs given to `RedisConfig::tls_root_ca_pem`. A
//!   certificate that does not verify fails the call (the layers answer
//!   503) before any command, the password included, is sent; nothing
//!   falls back to plain text.
//! - **No switch turns verification off**: redis-rs' `#insecure` URL
//!   suffix is refused.
//! - **Mistakes are [`RedisConfigError`]s from [`RedisConfig::build`]**,
//!   never a failure at the first request: a `rediss://` URL in a build
//!   without the `tls` feature (`TlsFeatureDisabled`), `#insecure`
//!   (`TlsInsecure`), a root CA that does not parse or holds no certificate
//!   (`TlsRootCa`, `NoRootCa`) or that comes with a target that is not
//!   `rediss://` (`RootCaWithoutTls`), cluster node URLs mixing TLS and
//!   plain (`TlsMixed`; the CA applies to every node).
//! - The URL's password never shows in `Debug` output or errors
//!   (`rediss://REDACTED@host:port/`).
//! - redis-rs builds its TLS configuration from rustls' process-wide
//!   crypto provider: the first TLS [`RedisConfig::build`] installs
//!   aws-lc-rs's unless the application installed one.
//! - Client certificates (Redis' `tls-auth-clients yes`) are not
//!   configurable: authenticate with the URL's user and password.
//!
//! # Key layout
//!
//! `<prefix>` is [`RedisConfig::key_prefix`] (default `portcullis`). The
//! sessions' keys come first; the [revocation](#revocations) and
//! [refresh](#refresh-families) keys are in their sections.
//! `<hex>` is the lower-case hex SHA-256 of the session id (the id itself
//! never reaches Redis).
//!
//! | key | type | holds | native expiry |
//! |---|---|---|---|
//! | `<prefix>:s:<hex>` | string | one session, as JSON: `u` user id, `c` created, `l` last seen, `i` idle deadline, `a` absolute deadline (ms since the epoch, as strings), `m` metadata, `n` the nonce of the create call, `d` the data (key -> the value's JSON) | the session's end + 60 s (`EXPIRY_GRACE`) |
//! | `<prefix>:ua:{<SHA-256 hex of the user id>}` | sorted set | one user's sessions: member = session `<hex>`, score = its absolute deadline (ms) | the latest absolute deadline + 60 s |
//! | `<prefix>:uc:{<SHA-256 hex of the user id>}` | sorted set | the same members, score = created at (ms): the eviction order | as above |
//!
//! A session is one string so that loading it is one `GET`, the cheapest
//! read Redis has (measured on Redis 7 for a 180-byte session: 0.11 µs of
//! server time per `GET`, 1.36 µs per `HGETALL` of the same record as a
//! 10-field hash). Updates stay key-level: a script decodes the record
//! (Redis' `cjson`), sets or removes only the keys the request changed and
//! writes it back, atomically, so concurrent requests changing different
//! keys both survive, and a record deleted meanwhile is never written
//! again.
//!
//! Expiry is judged by the store's clock, passed to every script as `now`
//! and compared with the stored deadlines; the native TTL only cleans up
//! (see [Clocks](#clocks)).
//!
//! **Redis Cluster.** Every script touches one key, or one user's two
//! index keys, which share a hash tag (`{<hex>}`), so each runs on one
//! node; sessions and user indexes spread over all slots (the prefix may
//! carry a hash tag of its own only if it pins everything to one slot). Operations that span a session and its user's index are ordered
//! so that a failure half-way never leaves a live session outside its
//! user's index (where "log out everywhere" would miss it):
//!
//! - create: the session is stored first (create-if-absent), then added to
//!   the index by a script that enforces the per-user cap atomically (it is
//!   the one place concurrent logins of a user meet; see [the user
//!   indexes](#the-user-indexes-bounded-work-per-login)). A refused or
//!   failed login deletes the session it stored; its token was never
//!   handed out.
//! - eviction: victims' records are deleted before they leave the index.
//! - delete: the record goes first, then its index entry.
//! - an index entry whose session is absent or another user's is dead;
//!   reads prune it. One whose session has ended by the reader's clock
//!   but is still in Redis is neither listed nor counted, and stays
//!   indexed until its key expires (another instance's clock may still
//!   see it live).
//!
//! # Round trips
//!
//! | operation | round trips |
//! |---|---|
//! | `load` (the one store call of an authenticated request) | **1**: `GET` |
//! | `update`, `touch` | 1: one script |
//! | `create` anonymous / with a user / with a cap | 1 / 2 / 2 below the cap, 4 at it (+2 with victims) |
//! | `delete` | 1, +1 to unindex a user's session |
//! | `list_for_user`, `count_for_user`, `delete_for_user` | 2 (+1 to prune) |
//!
//! The sessions an index names are read or deleted concurrently, so they
//! share one round trip on a single server. The first script call after
//! Redis lost its script cache (a restart) costs two more (`NOSCRIPT`, then
//! `SCRIPT LOAD`).
//!
//! # The user indexes: bounded work per login
//!
//! A user's index (of sessions, or of refresh families) is two sorted sets
//! under one hash tag: one scored by absolute deadline, one by creation
//! time (equal scores order by member, so it is the eviction order:
//! created at, then member). A login runs one script on them whose work is
//! bounded whatever the size of the index, so that one account with a
//! huge index (a script, an attacker) cannot stall the Redis every user
//! shares:
//!
//! - it adds the entry (`ZADD`, `O(log n)`) and removes at most 100 entries
//!   past their absolute deadline (`ZRANGEBYSCORE ... LIMIT`, then `ZREM`);
//! - without a cap, that is all;
//! - with a cap, it counts the entries before their absolute deadline
//!   (`ZCOUNT`, `O(log n)`). Below the cap it adds the entry. At the cap,
//!   an entry may still name a record that ended early (idle timeout,
//!   logout elsewhere), so the script returns the oldest entries (at most
//!   the cap + 64, and 1 000) without writing; the store reads those
//!   records, and a second run of the script removes the dead ones (ended
//!   refresh families stay listed but stop counting) before it refuses, or
//!   evicts the oldest live entries (at most 64 per login: a cap lowered
//!   far below a user's count converges over several logins).
//!
//! The cap counts exactly when the live entries fit in that window, which
//! the cap itself ensures; concurrent logins meet in the second run, which
//! is atomic, so racing logins never exceed the cap. Listing a user's
//! sessions or families and logging out everywhere still read the whole
//! index: that is what they are for.
//!
//! Measured (the `redis_index` bench; Redis 7.0, the busy 2-core machine),
//! Redis time of the index script per login, median: sessions 28, 27 and
//! 23 µs with 1 000, 10 000 and 100 000 entries in the user's index;
//! refresh families 28, 36 and 38 µs. The hash index this replaces read
//! every entry on every login: 1.3 ms, 25 to 47 ms and 240 to 555 ms
//! (sessions), 0.5 ms, 8 to 14 ms and 125 to 500 ms (refresh families),
//! on the same machine, as loaded as it was. While eight tasks log one
//! user in without pause on a 100 000-entry index, another user's session
//! loads and refreshes keep succeeding (none failed of about 11 000; the
//! flood's own CPU use on the shared cores raises their p99 from 0.2 to
//! 4.6 ms and from 4.0 to 7.8 ms); with the hash index, a single such
//! login held Redis for a quarter to half a second.
//!
//! **Upgrading from 0.1** (unpublished): the hash indexes
//! (`<prefix>:u:<hex>`, `<prefix>:ru:{<hex>}`) are not read any more, and
//! sessions or families created before the upgrade are not listed, so
//! "log out everywhere" would miss them. This is a clean break: flush the
//! store's keys (users log in again), or let them expire before relying on
//! per-user operations.
//!
//! # Clocks
//!
//! Whether something is still accepted (a session's idle and absolute
//! deadlines, a refresh family's, the refresh grace window, a JWT's `exp`)
//! is judged by the application's clock, passed to every script as `now`,
//! never by Redis' `TIME`: the deadlines compared are the application's
//! own (they were computed from its clock when the record was written, as
//! a JWT's `exp` is), a test's manual clock drives every deadline, and a
//! script judging by another clock would add the skew between the two
//! rather than remove it.
//!
//! The cost is that instances must agree on the time: keep their clocks
//! synchronized (NTP). What skew can do is bounded, and what the stores
//! *forget* never hangs on one instance's clock:
//!
//! - Accepting is judged by each instance's own clock: an instance whose
//!   clock is behind accepts a session, a refresh token or a JWT late by
//!   its skew, one whose clock is ahead refuses early by its skew; a
//!   refresh repeated on two instances is judged against a grace window
//!   shifted by the skew. A record lives in Redis [`EXPIRY_GRACE`] (60 s)
//!   past the end its writer computed, so an instance whose clock is
//!   behind by less than that still finds it and judges it by its own
//!   clock.
//! - Forgetting needs agreement. The shared sets are pruned only by the
//!   earlier of the caller's clock and Redis' `TIME`: user index entries
//!   [`EXPIRY_GRACE`] past their absolute deadline (sessions and refresh
//!   families), revocation entries `portcullis_jwt::MAX_LEEWAY` plus 60 s
//!   past their token's `exp`. A user index entry leaves the index early
//!   only when its record is gone or another user's (an ended record stays
//!   listed, uncounted, until its key expires), so "log out everywhere"
//!   finds every session that an instance whose clock is behind by less
//!   than [`EXPIRY_GRACE`] may still accept, whatever the clocks of the
//!   instances that listed or indexed meanwhile. A snapshot
//!   hands the view every revocation Redis keeps, and the view forgets an
//!   entry only when its clock and the monotonic time since it was built
//!   both say it expired.
//!
//! So an instance whose clock runs ahead, by any amount, never makes
//! another instance accept a revoked token or miss a session when logging
//! a user out everywhere, and a clock stepped forward and back never
//! brings a revoked token back. A revoked token is accepted again only by
//! an instance whose clock says it is still inside its lifetime and
//! leeway after two clocks have put it past them: Redis' `TIME` (past
//! `exp + MAX_LEEWAY + 60 s`) for a view that loads a snapshot, or, for a
//! view that forgot the entry itself, its monotonic time since it was
//! built, anchored to the clock at that moment. [`RedisBackend::clock_skew`]
//! measures this instance's skew against Redis, for a health check.
//!
//! # Measured
//!
//! Redis 7.0 on the same 2-core machine as the application (the
//! workspace's `redis_round_trips` and `redis_faults` tests, and the
//! `redis_session` bench):
//!
//! - **Round trips per authenticated request: 1.** 100 requests cost 100
//!   `GET`s and no other command (`INFO commandstats` deltas), and 100
//!   request/reply exchanges on the wire (a counting TCP proxy). Through a
//!   `deadpool-redis` pool: 300 commands (`GET`, `UNWATCH`, `PING`) and
//!   200 exchanges.
//! - **Throughput**, 32 requests at a time: `SessionLayer` on this store
//!   serves 0.34 to 0.40 times the requests per second of bare `GET`s of a
//!   value the session's size (the floor); the store's `load` alone 0.69
//!   times; through a deadpool pool 0.07 times.
//! - **Time to 503**: Redis killed, 1.1 ms (median; 11 ms at most); Redis
//!   frozen (`SIGSTOP`), 252 ms: the 250 ms timeout. A restarted Redis
//!   answers the next request within a few milliseconds (reconnect and
//!   resend), within the 100 ms backoff at worst.
//!
//! # Revocations
//!
//! `RedisRevocationStore` (feature `jwt`) keeps the JWT revocation state
//! (a `jti` denylist, a `sid` denylist, per-user token versions) in Redis
//! and a copy in every instance's in-process `RevocationView`, which the
//! `JwtLayer` checks per request **without any Redis call**.
//!
//! | key | type | holds | native expiry |
//! |---|---|---|---|
//! | `<prefix>:rv:t` | sorted set | revoked token ids: member = `jti`, score = the token's `exp` (s) | the latest entry's expiry + `MAX_LEEWAY` + 60 s |
//! | `<prefix>:rv:s` | sorted set | revoked sessions / refresh families: member = `sid`, score = when its last access token expires (s) | the latest entry's expiry + `MAX_LEEWAY` + 60 s |
//! | `<prefix>:rv:u` | hash | token versions: field = user (`sub`), value = version | none: versions never go down |
//! | `<prefix>:rv` | pub/sub channel | one message per change: `t <exp> <jti>`, `s <exp> <sid>`, `u <version> <user>` | |
//!
//! - **Writes, then publishes**, in one script per call (one round trip):
//!   an entry is stored, then the change is published. A layer accepts a
//!   token up to its leeway past `exp` (at most `portcullis_jwt::MAX_LEEWAY`,
//!   300 s), so entries are kept until their expiry + `MAX_LEEWAY`: one
//!   whose expiry passed less than that ago is still stored and published,
//!   older ones are dropped from the set on every write, and the set's TTL
//!   follows its latest entry. `revoke_user` increments the user's version
//!   (`INCR` semantics, from at least the version this instance's view
//!   holds, so versions keep going up even after Redis lost its data).
//!   The change is applied to this instance's view when the call returns.
//! - **Push**: each store spawns one task with a dedicated subscriber
//!   connection (`SUBSCRIBE <prefix>:rv`); every message is applied to the
//!   view as it arrives. On a cluster the subscriber connects to one of the
//!   configured nodes: a message published on any node reaches every node.
//!   Pub/sub channels are not per database: applications sharing one
//!   Redis must use distinct key prefixes, not only distinct database
//!   numbers (with Redis ACLs, the user needs the `<prefix>:rv` channel).
//! - **Snapshot** at start and after every reconnect of the subscriber:
//!   it subscribes first, then reads the two sets and the hash (`ZSCAN`,
//!   `HSCAN`, 1000 entries a call, the three at once) and merges every
//!   entry within its expiry + `MAX_LEEWAY` into the view. A change made while the subscriber was away (its
//!   message lost) is in the snapshot. The snapshot reads only the
//!   revocation keys, never the keyspace (no `SCAN`), so it costs the same
//!   on a Redis that also holds millions of sessions. Merged, never
//!   replacing: revocations only grow, and entries leave the view when
//!   their tokens expire, so an empty Redis after a restart does not bring
//!   revoked tokens back on instances that had seen them.
//! - **Failures**: every call is bounded by the backend's timeout; with
//!   Redis down, revoke calls fail with a `StoreError` (503 upstream) and
//!   the view keeps its state (requests go on being checked against it).
//!   The subscriber pings every second and reconnects by itself, the pause
//!   doubling from the backend's reconnect backoff up to 2 s (with jitter).
//!   Until the first snapshot has loaded the view holds only this
//!   instance's own revocations: wait for
//!   `RedisRevocationStore::wait_synced` before serving.
//! - **Staleness bound**: an instance cut off from Redis cannot learn of
//!   revocations made elsewhere. Past `max_staleness` without a verified
//!   connection (a ping answered, a message or a snapshot; 4 s by
//!   default), a timer of its own marks the view stale and the `JwtLayer`
//!   answers 503 until the subscriber has reconnected and loaded a fresh
//!   snapshot. A half-open connection (a frozen server, a dead path whose
//!   socket stays open) trips it too: pings go unanswered. Measured over
//!   HTTP (the `redis_security` tests) with a 1 s bound: 503 after 1.00
//!   to 1.02 s, path cut or server frozen; once Redis is reachable again,
//!   200 again, and the user revoked meanwhile refused, as soon as the
//!   subscriber has reconnected (within its backoff) and loaded its
//!   snapshot. `max_staleness(None)` turns it off:
//!   the instance then keeps accepting tokens for as long as the cut lasts,
//!   revoked ones included (availability over revocation).
//!
//! # Refresh families
//!
//! `RedisRefreshStore` (feature `refresh`) keeps refresh-token families.
//!
//! | key | type | holds | native expiry |
//! |---|---|---|---|
//! | `<prefix>:rf:{<family id>}` | hash | one family: `u` user, `k` claims (JSON), `d` device (JSON), `c`/`l`/`i`/`a` created, last used, idle and absolute deadlines (ms), `cur` the current token's SHA-256 (hex), `p`/`pa` the previous one and when it was rotated, `h` older digests (hex, concatenated), `r` rotations, `n` the create call's nonce; `x` marks a tombstone | the family's end + 60 s; a tombstone 60 s |
//! | `<prefix>:rua:{<SHA-256 hex of the user id>}` | sorted set | one user's families: member = family id, score = its absolute deadline (ms) | the latest absolute deadline + 60 s |
//! | `<prefix>:ruc:{<SHA-256 hex of the user id>}` | sorted set | the same members, score = created at (ms): the eviction order | as above |
//!
//! Tokens never reach Redis, only their digests. The family id in braces is
//! a hash tag, and so is the user's hex in the index keys: every script
//! touches one family key or one user's two index keys, so each runs on
//! one Cluster node, and families spread over all slots.
//!
//! - **Rotation is one Lua script** reproducing `Family::classify` and
//!   `Family::rotate` exactly (the workspace's `redis_refresh` test runs
//!   it in lockstep with the memory store on random sequences): a
//!   compare-and-swap on the presented digest. Current: rotate (history
//!   trimmed to the caller's limit, idle deadline slid but never past the
//!   absolute one). The previous token within the grace window (measured
//!   from its rotation time): `Repeat` when the current token is the
//!   caller's successor, else `KeyMismatch`, nothing written. The previous
//!   token after the window, or an older one: reuse, the family is deleted
//!   (`Reused`). An ended family (by the `now` the caller passes) is
//!   deleted and `Invalid`; so is any digest the family never issued.
//! - **The user index** is written after the family on create (a live
//!   family is listed once `create` returned, so log out everywhere finds
//!   it) and cleaned on revoke and reuse. An entry whose family is gone
//!   (native expiry, revoked, reused, another user's) is pruned by the
//!   next read; entries past their absolute deadline (+ 60 s) by the next
//!   logins, a bounded batch each (see [the user
//!   indexes](#the-user-indexes-bounded-work-per-login)). Ended families
//!   stay listed until their key goes (another instance's clock may still
//!   see them live); `list_user` filters them by `now`.
//! - **The per-user cap** (`create` with `max_per_user`): in the index
//!   script, atomically with the insert; the user's oldest live families
//!   beyond the cap are deleted and returned (the refresher revokes their
//!   access tokens). Families that ended never count.
//! - **Expiry** is judged by the `now` the caller passes (the refresher's
//!   clock); the native TTLs, computed from that `now`, only clean up.
//!   `purge_expired` walks the family keys with `SCAN` (every primary of a
//!   cluster): Redis' TTLs already remove ended families, so applications
//!   need not call it.
//!
//! # Which calls are resent
//!
//! A call that failed on a broken connection (the reply never came: the
//! first attempt may or may not have run) is sent once more, within the
//! same time bound, when running it twice has the effect and the answer of
//! running it once:
//!
//! | store | resent | not resent |
//! |---|---|---|
//! | sessions | every call | `delete` (a second run would report the session as already gone) |
//! | revocations | `revoke_token`, `revoke_session` (the entry is stored once; a message applied twice changes nothing), snapshot reads | `revoke_user` (it would bump the version twice) |
//! | refresh | `create` (the nonce tells the resend the record it finds is its own), `rotate`, `get`, `revoke`, `revoke_user`, `list_user`, `purge_expired` | |
//!
//! `rotate` is safe to resend by design: a resent rotation finds its token
//! already rotated at that very `now`, inside the grace window, and gets
//! `Repeat` with the same successor. A reuse detection leaves a tombstone
//! for 60 s that answers a resend of that very call (same digest, same
//! `now`) with `Reused` again, so the caller still revokes the family's
//! access tokens; every other call sees the family as gone. A resent
//! `revoke` that follows a lost reply reports the family as already gone
//! (the refresher revokes the family's access tokens either way).
//!
//! # Measured: revocations and refresh
//!
//! Redis 7.0, the same busy 2-core machine (the `redis_revocation` and
//! `redis_refresh` tests, and the `refresh` bench):
//!
//! - **Redis calls per JWT request: 0.** 400 requests on an instance whose
//!   view holds a revocation: no Redis command at all (`INFO commandstats`
//!   delta) and no exchange on that instance's connection (a counting
//!   proxy).
//! - **Propagation**, from `revoke_user` returning on instance A until
//!   instance B's view refuses the user's tokens, over 200 revocations:
//!   median 15 to 75 µs, p99 3 to 5 ms, max 4 to 5 ms (the subscriber often
//!   has the message before A has its reply). From the call on A: median
//!   0.35 to 0.43 ms, max 4.4 to 5.1 ms. Through HTTP, a reuse detected on
//!   B refuses the family's access token on A after about 1 ms.
//! - **Time to 503**: revoke calls with Redis down fail in 40 to 240 µs
//!   (connection refused, then the backoff answers at once); a refresh
//!   with Redis killed answers 503 in 1.0 to 1.3 ms, with Redis frozen in
//!   254 ms (the timeout); the refresh token still works afterwards.
//! - **Refresh endpoint throughput**, 16 families refreshing at once (one
//!   rotation and one HS256 access token each): memory stores 78 000 to
//!   126 000 refreshes/s, Redis 8 600 to 13 700/s, 0.08 to 0.11 of memory.
//!   A refresh is **one** Redis call (`EVALSHA`, one round trip); the
//!   script costs Redis 28 to 33 µs of server time for a family carrying a
//!   full 64-digest history (the default history limit), and Redis shares
//!   the two cores with the application here.
//! - **The revocation view's cost** on a bearer request carrying `sid`,
//!   `jti` and `ver`, the view holding 10 000 revoked sessions, 10 000
//!   revoked token ids and 1 000 user versions: 1.01 to 1.03 times the
//!   time of the same request through a `JwtLayer` without a view
//!   (interleaved measurement; about 1.6 µs a request in process with the
//!   verified-token cache on, 4 to 6 µs with it off, which is then mostly
//!   the HS256 check), and no Redis command in 1 000 requests.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;
mod config;
mod connection;
#[cfg(feature = "jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
pub mod dpop;
#[cfg(any(feature = "session", feature = "refresh"))]
mod index;
#[cfg(any(feature = "session", feature = "refresh"))]
mod nonce;
#[cfg(feature = "refresh")]
#[cfg_attr(docsrs, doc(cfg(feature = "refresh")))]
pub mod refresh;
#[cfg(feature = "jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
pub mod revocation;
#[cfg(feature = "session")]
mod session;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
#[cfg(feature = "throttle")]
#[cfg_attr(docsrs, doc(cfg(feature = "throttle")))]
pub mod throttle;

/// The `deadpool-redis` this crate is built on (and the `redis` crate, as
/// `deadpool_redis::redis`), for [`RedisConfig::from_pool`].
pub use deadpool_redis;

pub use backend::RedisBackend;
pub use config::{
    DEFAULT_KEY_PREFIX, DEFAULT_RECONNECT_BACKOFF, DEFAULT_TIMEOUT, RedisConfig, RedisConfigError,
};
#[cfg(feature = "jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
pub use dpop::RedisReplayCache;
#[cfg(feature = "refresh")]
#[cfg_attr(docsrs, doc(cfg(feature = "refresh")))]
pub use refresh::RedisRefreshStore;
#[cfg(feature = "jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
pub use revocation::{RedisRevocationStore, RedisRevocationStoreBuilder, RevocationStartError};
#[cfg(feature = "session")]
#[cfg_attr(docsrs, doc(cfg(feature = "session")))]
pub use session::RedisSessionStore;
#[cfg(feature = "throttle")]
#[cfg_attr(docsrs, doc(cfg(feature = "throttle")))]
pub use throttle::RedisThrottleStore;

/// How long Redis keeps a record (a session, a refresh family, a user
/// index) after the store's clock says it ended: room for clock skew
/// between instances. Expiry itself is judged by the store's clock (or the
/// time the caller passes); Redis' own expiry only cleans up.
pub const EXPIRY_GRACE: std::time::Duration = std::time::Duration::from_secs(60);
