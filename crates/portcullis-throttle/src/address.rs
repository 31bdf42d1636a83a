//! The client address: the connection's peer, or behind proxies the app
//! names, the address those proxies report.
//!
//! Over 500 lines in one file: the two proxy headers' parsers, the walk
//! from the right and the ranges are one rule, read together when it is
//! audited.
//!
//! By default only the peer address counts (axum's `ConnectInfo<SocketAddr>`
//! with the `axum` feature, or a plain `SocketAddr` in the request's
//! extensions). Headers are read only when the peer is one of the trusted
//! proxies the app lists:
//!
//! ```
//! use std::net::{IpAddr, SocketAddr};
//! use http::{Extensions, HeaderMap};
//! use portcullis_throttle::{ClientAddress, ProxyHeader};
//!
//! let behind = ClientAddress::peer()
//!     .trust_proxy("10.0.0.0/8").unwrap()
//!     .proxy_header(ProxyHeader::XForwardedFor);
//! let mut ext = Extensions::new();
//! ext.insert(SocketAddr::from(([10, 0, 0, 5], 4000)));
//! let mut headers = HeaderMap::new();
//! headers.insert("x-forwarded-for", "203.0.113.9, 198.51.100.7, 10.0.0.3".parse().unwrap());
//! // The rightmost address no trusted proxy is at: the one the proxies saw.
//! assert_eq!(behind.resolve(&ext, &headers), Some("198.51.100.7".parse::<IpAddr>().unwrap()));
//!
//! // Without trusted proxies, a header is never read.
//! assert_eq!(ClientAddress::peer().resolve(&ext, &headers), Some("10.0.0.5".parse::<IpAddr>().unwrap()));
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use http::{Extensions, HeaderMap, HeaderName};

/// The most entries of a proxy header walked, from the right: a longer
/// chain of trusted proxies stops the walk there (the address reached so
/// far is the client). Entries left of them are never read.
const MAX_HOPS: usize = 64;

/// A range of addresses in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`;
/// a bare address is a single host).
///
/// ```
/// use portcullis_throttle::IpRange;
///
/// let r: IpRange = "192.168.0.0/16".parse().unwrap();
/// assert!(r.contains("192.168.3.4".parse().unwrap()));
/// assert!(!r.contains("192.169.0.1".parse().unwrap()));
/// assert!("10.0.0.0/33".parse::<IpRange>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpRange {
    network: IpAddr,
    prefix: u8,
}

/// Why a trusted-proxy range was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IpRangeError {
    /// The address part is not an IPv4 or IPv6 address.
    #[error("not an IP address or CIDR range")]
    Address,
    /// The prefix length is not a number within the address's bits.
    #[error("the prefix length is not 0-32 (IPv4) or 0-128 (IPv6)")]
    Prefix,
}

impl IpRange {
    /// The range of `prefix` leading bits of `network` (host bits are
    /// cleared).
    ///
    /// # Errors
    ///
    /// [`IpRangeError::Prefix`] past 32 (IPv4) or 128 (IPv6) bits.
    pub fn new(network: IpAddr, prefix: u8) -> Result<Self, IpRangeError> {
        let network = canonical(network);
        let bits = if network.is_ipv4() { 32 } else { 128 };
        if prefix > bits {
            return Err(IpRangeError::Prefix);
        }
        Ok(Self {
            network: mask(network, prefix),
            prefix,
        })
    }

    /// Whether `ip` is in the range (an IPv4-mapped IPv6 address counts as
    /// its IPv4 address).
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        ip.is_ipv4() == self.network.is_ipv4() && mask(ip, self.prefix) == self.network
    }
}

impl FromStr for IpRange {
    type Err = IpRangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network: IpAddr = addr.parse().map_err(|_| IpRangeError::Address)?;
        let network = canonical(network);
        let prefix = match prefix {
            None => {
                if network.is_ipv4() {
                    32
                } else {
                    128
                }
            }
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse().map_err(|_| IpRangeError::Prefix)?
            }
            Some(_) => return Err(IpRangeError::Prefix),
        };
        Self::new(network, prefix)
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as its IPv4 address;
/// others unchanged.
#[must_use]
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

/// The address a counter is kept for: IPv4 addresses whole, IPv6 addresses
/// by their /64 (one subscriber usually holds a /64 or more, so counting
/// single IPv6 addresses would be evaded by changing the last bits).
///
/// ```
/// use std::net::IpAddr;
/// use portcullis_throttle::address::counted_address;
///
/// let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
/// let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
/// assert_eq!(counted_address(a), counted_address(b));
/// assert_eq!(counted_address("::ffff:192.0.2.1".parse().unwrap()), "192.0.2.1".parse::<IpAddr>().unwrap());
/// ```
#[must_use]
pub fn counted_address(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        v4 @ IpAddr::V4(_) => v4,
        v6 @ IpAddr::V6(_) => mask(v6, 64),
    }
}

/// The header trusted proxies report the client's address in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (every header line, in
    /// order).
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=192.0.2.43, for="[2001:db8::1]:4711"`.
    Forwarded,
}

/// Reads the peer address from a request's extensions.
pub type PeerFn = fn(&Extensions) -> Option<IpAddr>;

/// The peer address a server put in the request's extensions: axum's
/// `ConnectInfo<SocketAddr>` (with the `axum` feature; serve the app with
/// `into_make_service_with_connect_info::<SocketAddr>()`), else a plain
/// `SocketAddr`.
#[must_use]
pub fn peer_address(extensions: &Extensions) -> Option<IpAddr> {
    #[cfg(feature = "axum")]
    if let Some(info) = extensions.get::<axum::extract::ConnectInfo<SocketAddr>>() {
        return Some(info.0.ip());
    }
    extensions.get::<SocketAddr>().map(SocketAddr::ip)
}

/// How the client's address is found: the connection's peer, or, when the
/// peer is a trusted proxy, the address the proxies report in a header.
///
/// Headers are client-controlled unless a proxy the app runs overwrote or
/// appended them, so none is read unless the app names its proxies with
/// [`trust_proxy`](Self::trust_proxy). Behind trusted proxies the chain in
/// the header is walked **from the right** (the end the nearest proxy
/// wrote), skipping trusted proxies; the first address that is not a
/// trusted proxy is the client. Everything left of it may be forged and is
/// ignored. When every address is a trusted proxy, the leftmost is the
/// client. Every line of the header counts, in order (RFC 9110 list
/// semantics), so a second line cannot hide the real chain; entries are
/// split on raw bytes, so a byte that is not ASCII spoils only its own
/// entry. At most 64 entries are walked, and only from the right, so a
/// client prepending any number of forged entries changes nothing. An entry that
/// is not an address (`unknown`, an obfuscated `_name` of RFC 7239, or
/// garbage) ends the walk: the nearest trusted hop is taken as the client,
/// never an address the client chose.
///
/// [`resolve`](Self::resolve) gives the exact client address (for logs and
/// "your devices" pages); the throttle counts IPv6 clients per /64
/// ([`counted_address`]).
#[derive(Clone)]
pub struct ClientAddress {
    trusted: Arc<[IpRange]>,
    header: ProxyHeader,
    peer: PeerFn,
}

impl Default for ClientAddress {
    fn default() -> Self {
        Self::peer()
    }
}

impl fmt::Debug for ClientAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientAddress")
            .field("trusted", &self.trusted)
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl ClientAddress {
    /// The connection's peer address ([`peer_address`]), no header read.
    #[must_use]
    pub fn peer() -> Self {
        Self {
            trusted: Arc::from(Vec::new()),
            header: ProxyHeader::XForwardedFor,
            peer: peer_address,
        }
    }

    /// Trusts the proxies in `range` (CIDR, or one address): when the peer
    /// is one of them, the [`proxy_header`](Self::proxy_header) is read.
    ///
    /// # Errors
    ///
    /// [`IpRangeError`] when `range` is not an address or CIDR range.
    pub fn trust_proxy(mut self, range: &str) -> Result<Self, IpRangeError> {
        let range: IpRange = range.parse()?;
        let mut trusted = self.trusted.to_vec();
        trusted.push(range);
        self.trusted = trusted.into();
        Ok(self)
    }

    /// The header trusted proxies write (default
    /// [`ProxyHeader::XForwardedFor`]). Read only when the peer is a
    /// trusted proxy.
    #[must_use]
    pub const fn proxy_header(mut self, header: ProxyHeader) -> Self {
        self.header = header;
        self
    }

    /// Reads the peer address with `peer` instead of [`peer_address`] (a
    /// server that stores it another way).
    #[must_use]
    pub const fn with_peer_fn(mut self, peer: PeerFn) -> Self {
        self.peer = peer;
        self
    }

    /// The trusted proxy ranges.
    #[must_use]
    pub fn trusted(&self) -> &[IpRange] {
        &self.trusted
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|r| r.contains(ip))
    }

    /// The client's address; `None` when the server put no peer address in
    /// the extensions.
    #[must_use]
    pub fn resolve(&self, extensions: &Extensions, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = canonical((self.peer)(extensions)?);
        if !self.is_trusted(peer) {
            return Some(peer);
        }
        let hops = match self.header {
            ProxyHeader::XForwardedFor => x_forwarded_for(headers),
            ProxyHeader::Forwarded => forwarded_for(headers),
        };
        let mut client = peer;
        for hop in hops {
            let Some(ip) = hop else {
                return Some(client);
            };
            client = canonical(ip);
            if !self.is_trusted(client) {
                return Some(client);
            }
        }
        Some(client)
    }
}

/// The client address the throttle layer found, in the request's
/// extensions for the handlers and layers behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientIp(pub IpAddr);

/// A `portcullis_core::request::ClientIpFn`: the [`ClientIp`] a
/// [`LoginThrottleLayer`](crate::LoginThrottleLayer) in front put in the
/// extensions, else the peer address ([`peer_address`]). Give it to
/// `SessionConfig::client_ip` or `RefreshConfig::client_ip` so devices are
/// recorded with the address the throttle counted.
#[must_use]
pub fn client_ip(extensions: &Extensions, _headers: &HeaderMap) -> Option<IpAddr> {
    extensions
        .get::<ClientIp>()
        .map(|c| c.0)
        .or_else(|| peer_address(extensions))
}

/// Puts the [`ClientIp`] a [`ClientAddress`] finds into every request's
/// extensions, for routes the throttle is not on: with it outside the
/// session or refresh layer, [`client_ip`] gives them the address behind
/// trusted proxies too. A request whose address cannot be found passes
/// without one.
///
/// ```
/// use axum::{Router, routing::get};
/// use portcullis_throttle::{ClientAddress, ClientAddressLayer};
///
/// let proxies = ClientAddress::peer().trust_proxy("10.0.0.0/8").unwrap();
/// let app: Router = Router::new()
///     .route("/", get(|| async { "hi" }))
///     .layer(ClientAddressLayer::new(proxies));
/// # let _ = app;
/// ```
#[derive(Debug, Clone)]
pub struct ClientAddressLayer {
    address: ClientAddress,
}

impl ClientAddressLayer {
    /// A layer finding the client address with `address`.
    #[must_use]
    pub const fn new(address: ClientAddress) -> Self {
        Self { address }
    }
}

impl<S> tower_layer::Layer<S> for ClientAddressLayer {
    type Service = ClientAddressService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientAddressService {
            inner,
            address: self.address.clone(),
        }
    }
}

/// The service [`ClientAddressLayer`] builds.
#[derive(Debug, Clone)]
pub struct ClientAddressService<S> {
    inner: S,
    address: ClientAddress,
}

impl<S> ClientAddressService<S> {
    portcullis_core::inner_service_accessors!();
}

impl<S, B> tower_service::Service<http::Request<B>> for ClientAddressService<S>
where
    S: tower_service::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if let Some(ip) = self.address.resolve(req.extensions(), req.headers()) {
            req.extensions_mut().insert(ClientIp(ip));
        }
        self.inner.call(req)
    }
}

/// The last [`MAX_HOPS`] entries of the `X-Forwarded-For` lines, right to
/// left (the last line's last entry first); `None` for an entry that is not
/// an address. Entries are split on raw bytes: a byte that is not ASCII
/// spoils only the entry it is in, never the entries a proxy appended.
fn x_forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let name = HeaderName::from_static("x-forwarded-for");
    let lines: Vec<&[u8]> = headers
        .get_all(name)
        .iter()
        .map(http::HeaderValue::as_bytes)
        .collect();
    let mut hops = Vec::new();
    for line in lines.into_iter().rev() {
        for entry in line.rsplit(|&b| b == b',') {
            let entry = entry.trim_ascii();
            if entry.is_empty() {
                continue;
            }
            hops.push(std::str::from_utf8(entry).ok().and_then(parse_node));
            if hops.len() == MAX_HOPS {
                return hops;
            }
        }
    }
    hops
}

/// An address with an optional port: `192.0.2.1`, `192.0.2.1:80`,
/// `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:80`.
fn parse_node(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

/// The `for=` node of the last [`MAX_HOPS`] elements of the `Forwarded`
/// lines, right to left; `None` for an element without a usable address
/// (`unknown`, an obfuscated identifier, no `for`, a syntax error, a byte
/// that is not ASCII: it spoils only its own element).
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let lines: Vec<String> = headers
        .get_all(http::header::FORWARDED)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    let mut hops = Vec::new();
    for line in lines.iter().rev() {
        for element in rsplit_unquoted(line, ',') {
            if element.trim().is_empty() {
                continue;
            }
            hops.push(element_for(element));
            if hops.len() == MAX_HOPS {
                return hops;
            }
        }
    }
    hops
}

fn element_for(element: &str) -> Option<IpAddr> {
    let mut found = None;
    for pair in split_unquoted(element, ';') {
        let (name, value) = pair.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("for") {
            continue;
        }
        if found.is_some() {
            // Two `for` in one element: ambiguous.
            return None;
        }
        let value = value.trim();
        let value = match value.strip_prefix('"') {
            Some(q) => q.strip_suffix('"')?,
            None => value,
        };
        if value.contains('"') || value.contains('\\') {
            return None;
        }
        let node = parse_node(value)?;
        // RFC 7239 §6: IPv6 nodes are bracketed (and so quoted).
        if node.is_ipv6() && !value.starts_with('[') {
            return None;
        }
        found = Some(node);
    }
    found
}

/// Splits at `sep` outside double-quoted strings, scanning from the right
/// end (the end a trusted proxy wrote): the parts come right to left. A
/// quote preceded by an odd number of backslashes is escaped. Scanning from
/// the right, an unbalanced quote a client wrote can only swallow what is
/// left of it, never the elements appended after it.
fn rsplit_unquoted(s: &str, sep: char) -> Vec<&str> {
    let bytes = s.as_bytes();
    let sep = u8::try_from(sep).unwrap_or(b',');
    let mut parts = Vec::new();
    let mut end = bytes.len();
    let mut quoted = false;
    for i in (0..bytes.len()).rev() {
        match bytes[i] {
            b'"' => {
                let backslashes = bytes[..i].iter().rev().take_while(|&&b| b == b'\\').count();
                if !quoted || backslashes % 2 == 0 {
                    quoted = !quoted;
                }
            }
            b if b == sep && !quoted => {
                parts.push(&s[i + 1..end]);
                end = i;
            }
            _ => {}
        }
    }
    parts.push(&s[..end]);
    parts
}

/// Splits at `sep` outside double-quoted strings (a backslash escapes the
/// next character inside them).
fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if !quoted && c == sep {
            parts.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&s[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn request(peer: &str, header: &str, lines: &[&[u8]]) -> (Extensions, HeaderMap) {
        let mut ext = Extensions::new();
        ext.insert(SocketAddr::new(ip(peer), 1234));
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(
                HeaderName::from_bytes(header.as_bytes()).unwrap(),
                HeaderValue::from_bytes(l).unwrap(),
            );
        }
        (ext, h)
    }

    #[test]
    fn x_forwarded_for_table() {
        let proxies = ClientAddress::peer()
            .trust_proxy("10.0.0.0/8")
            .unwrap()
            .trust_proxy("fd00::/8")
            .unwrap();
        let cases: &[(&str, &[&[u8]], &str)] = &[
            // Untrusted peer: the header is ignored.
            ("198.51.100.1", &[b"203.0.113.5"], "198.51.100.1"),
            // Trusted peer without the header: the peer.
            ("10.0.0.1", &[], "10.0.0.1"),
            ("10.0.0.1", &[b"203.0.113.5"], "203.0.113.5"),
            // A forged left part is skipped: rightmost untrusted wins.
            (
                "10.0.0.1",
                &[b"1.1.1.1, 203.0.113.5, 10.0.0.2"],
                "203.0.113.5",
            ),
            // Several lines are one list.
            (
                "10.0.0.1",
                &[b"1.1.1.1", b"203.0.113.5, 10.0.0.2"],
                "203.0.113.5",
            ),
            // All trusted: the leftmost.
            ("10.0.0.1", &[b"10.0.0.9, 10.0.0.2"], "10.0.0.9"),
            // Ports and brackets.
            ("10.0.0.1", &[b"203.0.113.5:4711"], "203.0.113.5"),
            ("10.0.0.1", &[b"[2001:db8::1]:4711"], "2001:db8::1"),
            ("10.0.0.1", &[b"2001:db8::1"], "2001:db8::1"),
            // Garbage ends the walk at the nearest trusted hop.
            ("10.0.0.1", &[b"203.0.113.5, garbage, 10.0.0.2"], "10.0.0.2"),
            ("10.0.0.1", &[b"garbage"], "10.0.0.1"),
            ("10.0.0.1", &[b"\xff"], "10.0.0.1"),
            // A byte that is not ASCII spoils only its own entry.
            ("10.0.0.1", &[b"\xff, 203.0.113.66"], "203.0.113.66"),
            ("10.0.0.1", &[b"203.0.113.5, \xff, 10.0.0.2"], "10.0.0.2"),
            // Mapped addresses are IPv4.
            ("::ffff:10.0.0.1", &[b"::ffff:203.0.113.5"], "203.0.113.5"),
            ("fd00::1", &[b"203.0.113.5"], "203.0.113.5"),
        ];
        for (peer, lines, want) in cases {
            let (ext, h) = request(peer, "x-forwarded-for", lines);
            assert_eq!(
                proxies.resolve(&ext, &h),
                Some(ip(want)),
                "{peer} {lines:?}"
            );
        }
    }

    #[test]
    fn forwarded_table() {
        let proxies = ClientAddress::peer()
            .trust_proxy("10.0.0.0/8")
            .unwrap()
            .proxy_header(ProxyHeader::Forwarded);
        let cases: &[(&str, &[&[u8]], &str)] = &[
            ("198.51.100.1", &[b"for=203.0.113.5"], "198.51.100.1"),
            ("10.0.0.1", &[b"for=203.0.113.5"], "203.0.113.5"),
            (
                "10.0.0.1",
                &[b"For=\"203.0.113.5:80\";proto=https"],
                "203.0.113.5",
            ),
            (
                "10.0.0.1",
                &[b"for=1.1.1.1, for=\"[2001:db8:cafe::17]:4711\", for=10.0.0.2"],
                "2001:db8:cafe::17",
            ),
            (
                "10.0.0.1",
                &[b"for=1.1.1.1", b"for=203.0.113.5"],
                "203.0.113.5",
            ),
            // Quoted separators do not split.
            ("10.0.0.1", &[b"for=203.0.113.5;x=\"a,b;c\""], "203.0.113.5"),
            // unknown, obfuscated, unbracketed IPv6, no for: the nearest trusted hop.
            ("10.0.0.1", &[b"for=unknown"], "10.0.0.1"),
            ("10.0.0.1", &[b"for=_hidden, for=10.0.0.2"], "10.0.0.2"),
            ("10.0.0.1", &[b"for=2001:db8::1"], "10.0.0.1"),
            ("10.0.0.1", &[b"proto=https"], "10.0.0.1"),
            ("10.0.0.1", &[b"for=1.1.1.1;for=2.2.2.2"], "10.0.0.1"),
            ("10.0.0.1", &[b"for=\"unterminated"], "10.0.0.1"),
            // A client's unbalanced quote cannot swallow the proxy's element.
            (
                "10.0.0.1",
                &[b"for=\"198.51.100.1, for=203.0.113.66"],
                "203.0.113.66",
            ),
            (
                "10.0.0.1",
                &[b"for=\"198.51.100.1\\, for=203.0.113.66"],
                "203.0.113.66",
            ),
            (
                "10.0.0.1",
                &[b"for=x;by=\", for=203.0.113.66"],
                "203.0.113.66",
            ),
            // Escaped quotes inside a quoted value.
            (
                "10.0.0.1",
                &[b"for=203.0.113.5;x=\"a\\\",b\""],
                "203.0.113.5",
            ),
        ];
        for (peer, lines, want) in cases {
            let (ext, h) = request(peer, "forwarded", lines);
            assert_eq!(
                proxies.resolve(&ext, &h),
                Some(ip(want)),
                "{peer} {lines:?}"
            );
        }
    }

    #[test]
    fn no_peer_no_address() {
        assert_eq!(
            ClientAddress::peer().resolve(&Extensions::new(), &HeaderMap::new()),
            None
        );
    }

    #[test]
    fn a_long_forged_prefix_changes_nothing() {
        for header in [ProxyHeader::XForwardedFor, ProxyHeader::Forwarded] {
            let proxies = ClientAddress::peer()
                .trust_proxy("10.0.0.0/8")
                .unwrap()
                .proxy_header(header);
            let (name, node): (&str, fn(String) -> String) = match header {
                ProxyHeader::XForwardedFor => ("x-forwarded-for", |ip| ip),
                _ => ("forwarded", |ip| format!("for={ip}")),
            };
            let mut chain: Vec<String> = (0..10_000)
                .map(|i| node(format!("198.18.{}.{}", i / 250 % 250, i % 250)))
                .collect();
            chain.push(node("203.0.113.7".to_owned()));
            let line = chain.join(", ");
            let (ext, h) = request("10.0.0.1", name, &[line.as_bytes(), b"\xff"]);
            // The last line's garbage ends the walk at the proxy itself...
            assert_eq!(proxies.resolve(&ext, &h), Some(ip("10.0.0.1")), "{name}");
            let (ext, h) = request("10.0.0.1", name, &[line.as_bytes()]);
            // ...and without it, the real client, however long the prefix.
            assert_eq!(proxies.resolve(&ext, &h), Some(ip("203.0.113.7")), "{name}");
        }
    }

    #[test]
    fn a_long_chain_stops_at_the_hop_limit() {
        let proxies = ClientAddress::peer().trust_proxy("10.0.0.0/8").unwrap();
        let mut chain = vec!["203.0.113.5".to_owned()];
        chain.extend((0..10_000).map(|_| "10.0.0.2".to_owned()));
        let line = chain.join(",");
        let (ext, h) = request("10.0.0.1", "x-forwarded-for", &[line.as_bytes()]);
        assert_eq!(proxies.resolve(&ext, &h), Some(ip("10.0.0.2")));
    }

    #[test]
    fn ranges() {
        assert_eq!(
            "10.1.2.3/8".parse::<IpRange>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert!(
            "::/0"
                .parse::<IpRange>()
                .unwrap()
                .contains(ip("2001:db8::1"))
        );
        assert!(!"::/0".parse::<IpRange>().unwrap().contains(ip("192.0.2.1")));
        assert!(
            "0.0.0.0/0"
                .parse::<IpRange>()
                .unwrap()
                .contains(ip("::ffff:192.0.2.1"))
        );
        for bad in [
            "",
            "10.0.0.0/",
            "10.0.0.0/x",
            "10.0.0.0/+8",
            "::/129",
            "host/8",
            "10.0.0.0/0008",
        ] {
            assert!(bad.parse::<IpRange>().is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        /// Any header bytes, either header: an answer, never a panic.
        #[test]
        fn headers_never_panic(lines in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..80), 0..4)) {
            for (name, header) in [("x-forwarded-for", ProxyHeader::XForwardedFor), ("forwarded", ProxyHeader::Forwarded)] {
                let proxies = ClientAddress::peer().trust_proxy("10.0.0.0/8").unwrap().proxy_header(header);
                let mut ext = Extensions::new();
                ext.insert(SocketAddr::new(ip("10.0.0.1"), 1));
                let mut h = HeaderMap::new();
                for l in &lines {
                    if let Ok(v) = HeaderValue::from_bytes(l) {
                        h.append(HeaderName::from_static(name), v);
                    }
                }
                proptest::prop_assert!(proxies.resolve(&ext, &h).is_some());
            }
        }

        #[test]
        fn ranges_never_panic(s in "\\PC{0,50}") {
            let _ = s.parse::<IpRange>();
        }
    }

    #[test]
    fn client_ip_prefers_the_throttle_s_answer() {
        let mut ext = Extensions::new();
        ext.insert(SocketAddr::new(ip("10.0.0.1"), 1));
        assert_eq!(client_ip(&ext, &HeaderMap::new()), Some(ip("10.0.0.1")));
        ext.insert(ClientIp(ip("203.0.113.5")));
        assert_eq!(client_ip(&ext, &HeaderMap::new()), Some(ip("203.0.113.5")));
        let _: portcullis_core::request::ClientIpFn = client_ip;
    }
}
