//! OAuth 2.0 protected resource metadata (RFC 9728): the document that
//! tells a client which authorization servers issue tokens for this
//! resource, which scopes it knows and how it takes tokens, and the
//! handler that serves it at `/.well-known/oauth-protected-resource`.
//!
//! A client that gets a 401 finds the document's URL in the challenge's
//! `resource_metadata` parameter (set it with [`ProtectedResourceMetadata::url`]),
//! fetches it, checks that its `resource` equals the URL it used (RFC 9728
//! section 3.3, so `resource` is rendered exactly as configured) and asks
//! one of the `authorization_servers` for a token (MCP clients do exactly
//! this).
//!
//! ```
//! use axum::Router;
//! use portcullis_jwt::Algorithm;
//! use portcullis_jwt::metadata::ProtectedResourceMetadata;
//!
//! let metadata = ProtectedResourceMetadata::builder("https://api.example.com/mcp")
//!     .authorization_server("https://id.example.com")
//!     .scopes_supported(["files:read", "files:write"])
//!     .dpop_signing_alg_values_supported([Algorithm::ES256])
//!     .build()
//!     .unwrap();
//! assert_eq!(
//!     metadata.well_known_path(),
//!     "/.well-known/oauth-protected-resource/mcp"
//! );
//! assert_eq!(
//!     metadata.url(),
//!     "https://api.example.com/.well-known/oauth-protected-resource/mcp"
//! );
//! assert_eq!(
//!     metadata.json(),
//!     r#"{"resource":"https://api.example.com/mcp","authorization_servers":["https://id.example.com"],"scopes_supported":["files:read","files:write"],"bearer_methods_supported":["header"],"dpop_signing_alg_values_supported":["ES256"]}"#
//! );
//! let app: Router = Router::new()
//!     .route_service(&metadata.well_known_path(), metadata.service());
//! ```
//!
//! Tokens for this resource name it as their audience: with RFC 8707
//! resource indicators the client asks for `resource=https://api.example.com/mcp`
//! and the token's `aud` is that URL. Configure it, as is, as the layer's
//! (or the issuer's) audience; `aud` is compared as an exact string.

use std::convert::Infallible;
use std::fmt;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use serde::Serialize;
use tower_service::Service;

use crate::alg::Algorithm;
use crate::jwks::url_allowed;

/// The well-known path of protected resource metadata (RFC 9728).
pub const WELL_KNOWN_PATH: &str = "/.well-known/oauth-protected-resource";

/// A configuration that cannot be published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// The resource identifier is not an `https` URL with a host and
    /// without a fragment (plain `http` only for a loopback host).
    #[error("the resource must be an https URL without fragment (plain http only for loopback)")]
    Resource,
    /// A URL member (`authorization_servers`, `jwks_uri`,
    /// `resource_documentation`, ...) is not `https` (plain `http` only
    /// for a loopback host).
    #[error("{0} must be an https URL (plain http only for loopback)")]
    Url(&'static str),
}

/// The document, in RFC 9728's member order; absent members are left out.
#[derive(Serialize, Clone, Default)]
struct Document {
    resource: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    authorization_servers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jwks_uri: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    scopes_supported: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    bearer_methods_supported: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    resource_signing_alg_values_supported: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_documentation: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_policy_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_tos_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_client_certificate_bound_access_tokens: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    dpop_signing_alg_values_supported: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dpop_bound_access_tokens_required: Option<bool>,
}

/// Builds a [`ProtectedResourceMetadata`]. See
/// [`ProtectedResourceMetadata::builder`].
#[must_use]
#[derive(Clone)]
pub struct ProtectedResourceMetadataBuilder {
    doc: Document,
}

impl fmt::Debug for ProtectedResourceMetadataBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProtectedResourceMetadataBuilder")
            .field("resource", &self.doc.resource)
            .finish_non_exhaustive()
    }
}

fn strings<S: Into<String>>(items: impl IntoIterator<Item = S>) -> Vec<String> {
    items.into_iter().map(Into::into).collect()
}

fn algs(items: impl IntoIterator<Item = Algorithm>) -> Vec<String> {
    items.into_iter().map(|a| a.as_str().to_owned()).collect()
}

impl ProtectedResourceMetadataBuilder {
    /// Adds an authorization server that issues tokens for this resource
    /// (its issuer identifier, as in its own metadata's `issuer`).
    pub fn authorization_server(mut self, issuer: impl Into<String>) -> Self {
        self.doc.authorization_servers.push(issuer.into());
        self
    }

    /// `jwks_uri`: where this resource publishes its own public keys (for
    /// signed responses; rarely needed).
    pub fn jwks_uri(mut self, url: impl Into<String>) -> Self {
        self.doc.jwks_uri = Some(url.into());
        self
    }

    /// `scopes_supported`: the scopes a client may ask for to reach this
    /// resource (replaces the list).
    pub fn scopes_supported<S: Into<String>>(
        mut self,
        scopes: impl IntoIterator<Item = S>,
    ) -> Self {
        self.doc.scopes_supported = strings(scopes);
        self
    }

    /// `bearer_methods_supported` (default `["header"]`, as the layer
    /// reads `Authorization`; an empty list leaves the member out).
    pub fn bearer_methods_supported<S: Into<String>>(
        mut self,
        methods: impl IntoIterator<Item = S>,
    ) -> Self {
        self.doc.bearer_methods_supported = strings(methods);
        self
    }

    /// `resource_signing_alg_values_supported`.
    pub fn resource_signing_alg_values_supported(
        mut self,
        algs_: impl IntoIterator<Item = Algorithm>,
    ) -> Self {
        self.doc.resource_signing_alg_values_supported = algs(algs_);
        self
    }

    /// `resource_name`: a name for people.
    pub fn resource_name(mut self, name: impl Into<String>) -> Self {
        self.doc.resource_name = Some(name.into());
        self
    }

    /// `resource_documentation`: a page for developers.
    pub fn resource_documentation(mut self, url: impl Into<String>) -> Self {
        self.doc.resource_documentation = Some(url.into());
        self
    }

    /// `resource_policy_uri`.
    pub fn resource_policy_uri(mut self, url: impl Into<String>) -> Self {
        self.doc.resource_policy_uri = Some(url.into());
        self
    }

    /// `resource_tos_uri`.
    pub fn resource_tos_uri(mut self, url: impl Into<String>) -> Self {
        self.doc.resource_tos_uri = Some(url.into());
        self
    }

    /// `tls_client_certificate_bound_access_tokens`.
    pub const fn tls_client_certificate_bound_access_tokens(mut self, bound: bool) -> Self {
        self.doc.tls_client_certificate_bound_access_tokens = Some(bound);
        self
    }

    /// `dpop_signing_alg_values_supported`: the DPoP proof algorithms this
    /// resource accepts.
    pub fn dpop_signing_alg_values_supported(
        mut self,
        algs_: impl IntoIterator<Item = Algorithm>,
    ) -> Self {
        self.doc.dpop_signing_alg_values_supported = algs(algs_);
        self
    }

    /// `dpop_bound_access_tokens_required`: whether every token must be
    /// DPoP-bound.
    pub const fn dpop_bound_access_tokens_required(mut self, required: bool) -> Self {
        self.doc.dpop_bound_access_tokens_required = Some(required);
        self
    }

    /// The document, rendered once.
    ///
    /// # Errors
    ///
    /// [`MetadataError::Resource`] when the resource is not an `https`
    /// URL with a host and without a fragment (`http` only to a loopback
    /// host); [`MetadataError::Url`] when another URL member is not
    /// `https` (`http` only to a loopback host).
    pub fn build(self) -> Result<ProtectedResourceMetadata, MetadataError> {
        let doc = self.doc;
        if !url_allowed(&doc.resource) || doc.resource.contains('#') {
            return Err(MetadataError::Resource);
        }
        let urls = doc
            .authorization_servers
            .iter()
            .map(|u| ("authorization_servers", Some(u)))
            .chain([
                ("jwks_uri", doc.jwks_uri.as_ref()),
                (
                    "resource_documentation",
                    doc.resource_documentation.as_ref(),
                ),
                ("resource_policy_uri", doc.resource_policy_uri.as_ref()),
                ("resource_tos_uri", doc.resource_tos_uri.as_ref()),
            ]);
        for (name, url) in urls {
            if url.is_some_and(|u| !url_allowed(u)) {
                return Err(MetadataError::Url(name));
            }
        }
        let (origin, path) = split_resource(&doc.resource);
        let well_known = format!("{WELL_KNOWN_PATH}{path}");
        let url = format!("{origin}{well_known}");
        // Strings, booleans and lists of strings: serialization cannot fail.
        let json = serde_json::to_string(&doc).unwrap_or_default();
        Ok(ProtectedResourceMetadata {
            inner: Arc::new(Inner {
                resource: doc.resource,
                json,
                well_known,
                url,
            }),
        })
    }
}

/// `scheme://authority` and the rest (path and query), a path of `/`
/// alone dropped (RFC 9728 section 3.1: the terminating slash after the
/// host is removed before the well-known string is inserted).
fn split_resource(resource: &str) -> (&str, &str) {
    let after_scheme = resource.find("://").map_or(0, |i| i + 3);
    let rest_at = resource[after_scheme..]
        .find(['/', '?'])
        .map_or(resource.len(), |i| after_scheme + i);
    let (origin, rest) = resource.split_at(rest_at);
    let rest = if rest == "/" {
        ""
    } else if let Some(query) = rest.strip_prefix("/?") {
        // `https://host/?q`: the slash after the host goes, the query stays.
        &rest[rest.len() - query.len() - 1..]
    } else {
        rest
    };
    (origin, rest)
}

struct Inner {
    resource: String,
    json: String,
    well_known: String,
    url: String,
}

/// An RFC 9728 protected resource metadata document, rendered once, and
/// what serves it. Cheap to clone.
#[derive(Clone)]
pub struct ProtectedResourceMetadata {
    inner: Arc<Inner>,
}

impl fmt::Debug for ProtectedResourceMetadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProtectedResourceMetadata")
            .field("resource", &self.inner.resource)
            .field("url", &self.inner.url)
            .finish_non_exhaustive()
    }
}

impl ProtectedResourceMetadata {
    /// Starts a document for the resource identified by `resource`: the
    /// URL clients use for it, `https://api.example.com` or
    /// `https://api.example.com/mcp` (rendered exactly as given). The
    /// bearer method defaults to `header`.
    pub fn builder(resource: impl Into<String>) -> ProtectedResourceMetadataBuilder {
        ProtectedResourceMetadataBuilder {
            doc: Document {
                resource: resource.into(),
                bearer_methods_supported: vec!["header".to_owned()],
                ..Document::default()
            },
        }
    }

    /// The resource identifier.
    #[must_use]
    pub fn resource(&self) -> &str {
        &self.inner.resource
    }

    /// The document as served.
    #[must_use]
    pub fn json(&self) -> &str {
        &self.inner.json
    }

    /// The path the document is served at:
    /// `/.well-known/oauth-protected-resource`, followed by the resource's
    /// path (and query) when it has one
    /// (`https://api.example.com/mcp` →
    /// `/.well-known/oauth-protected-resource/mcp`).
    #[must_use]
    pub fn well_known_path(&self) -> String {
        self.inner.well_known.clone()
    }

    /// The document's URL: the resource's origin and
    /// [`well_known_path`](Self::well_known_path). This is the value of
    /// the `resource_metadata` parameter of `WWW-Authenticate` challenges.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The answer to a `GET` of the document: 200, `application/json`,
    /// cacheable for an hour, readable from any origin (it is public, and
    /// browser-based clients fetch it cross-origin).
    #[must_use]
    pub fn response(&self) -> Response<String> {
        let mut res = Response::new(self.inner.json.clone());
        let headers = res.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=3600"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        res
    }

    /// A tower service that serves the document: `GET` and `HEAD` get
    /// [`response`](Self::response) (`HEAD` without the body), any other
    /// method 405 with `Allow: GET, HEAD`. It answers whatever path it is
    /// routed at: route it at [`well_known_path`](Self::well_known_path).
    #[must_use]
    pub fn service(&self) -> MetadataService {
        MetadataService {
            metadata: self.clone(),
        }
    }
}

/// Serves a [`ProtectedResourceMetadata`] document. See
/// [`ProtectedResourceMetadata::service`].
#[derive(Clone, Debug)]
pub struct MetadataService {
    metadata: ProtectedResourceMetadata,
}

impl<B> Service<Request<B>> for MetadataService {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = Ready<Result<Response<String>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let method = req.method();
        if method == Method::GET {
            return ready(Ok(self.metadata.response()));
        }
        if method == Method::HEAD {
            let mut res = self.metadata.response();
            res.body_mut().clear();
            return ready(Ok(res));
        }
        let mut res = Response::new(String::new());
        *res.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        res.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        ready(Ok(res))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_locations() {
        for (resource, path) in [
            (
                "https://api.example.com",
                "/.well-known/oauth-protected-resource",
            ),
            (
                "https://api.example.com/",
                "/.well-known/oauth-protected-resource",
            ),
            (
                "https://api.example.com/mcp",
                "/.well-known/oauth-protected-resource/mcp",
            ),
            (
                "https://api.example.com/a/b/",
                "/.well-known/oauth-protected-resource/a/b/",
            ),
            (
                "https://api.example.com:8443/v1",
                "/.well-known/oauth-protected-resource/v1",
            ),
            (
                "https://api.example.com?t=1",
                "/.well-known/oauth-protected-resource?t=1",
            ),
            (
                "https://api.example.com/?t=1",
                "/.well-known/oauth-protected-resource?t=1",
            ),
            (
                "http://127.0.0.1:3000/api",
                "/.well-known/oauth-protected-resource/api",
            ),
        ] {
            let m = ProtectedResourceMetadata::builder(resource)
                .build()
                .unwrap();
            assert_eq!(m.well_known_path(), path, "{resource}");
            let origin = split_resource(resource).0;
            assert_eq!(m.url(), format!("{origin}{path}"), "{resource}");
        }
    }

    #[test]
    fn refused_configurations() {
        let b = ProtectedResourceMetadata::builder;
        for resource in [
            "http://api.example.com",
            "https://api.example.com/#x",
            "api.example.com",
            "",
        ] {
            assert_eq!(
                b(resource).build().unwrap_err(),
                MetadataError::Resource,
                "{resource}"
            );
        }
        let ok = "https://api.example.com";
        assert_eq!(
            b(ok)
                .authorization_server("http://id.example.com")
                .build()
                .unwrap_err(),
            MetadataError::Url("authorization_servers")
        );
        assert_eq!(
            b(ok).jwks_uri("ftp://x/jwks").build().unwrap_err(),
            MetadataError::Url("jwks_uri")
        );
        assert_eq!(
            b(ok).resource_tos_uri("http://x/tos").build().unwrap_err(),
            MetadataError::Url("resource_tos_uri")
        );
    }

    #[test]
    fn every_member_in_order() {
        let m = ProtectedResourceMetadata::builder("https://api.example.com")
            .authorization_server("https://a.example.com")
            .authorization_server("https://b.example.com")
            .jwks_uri("https://api.example.com/jwks")
            .scopes_supported(["read"])
            .bearer_methods_supported(["header", "body"])
            .resource_signing_alg_values_supported([Algorithm::PS256])
            .resource_name("Files \"API\"")
            .resource_documentation("https://docs.example.com")
            .resource_policy_uri("https://example.com/policy")
            .resource_tos_uri("https://example.com/tos")
            .tls_client_certificate_bound_access_tokens(false)
            .dpop_signing_alg_values_supported([Algorithm::ES256, Algorithm::EdDSA])
            .dpop_bound_access_tokens_required(true)
            .build()
            .unwrap();
        assert_eq!(
            m.json(),
            concat!(
                r#"{"resource":"https://api.example.com","#,
                r#""authorization_servers":["https://a.example.com","https://b.example.com"],"#,
                r#""jwks_uri":"https://api.example.com/jwks","scopes_supported":["read"],"#,
                r#""bearer_methods_supported":["header","body"],"#,
                r#""resource_signing_alg_values_supported":["PS256"],"#,
                r#""resource_name":"Files \"API\"","#,
                r#""resource_documentation":"https://docs.example.com","#,
                r#""resource_policy_uri":"https://example.com/policy","#,
                r#""resource_tos_uri":"https://example.com/tos","#,
                r#""tls_client_certificate_bound_access_tokens":false,"#,
                r#""dpop_signing_alg_values_supported":["ES256","EdDSA"],"#,
                r#""dpop_bound_access_tokens_required":true}"#
            )
        );
        let minimal = ProtectedResourceMetadata::builder("https://api.example.com")
            .bearer_methods_supported(Vec::<String>::new())
            .build()
            .unwrap();
        assert_eq!(minimal.json(), r#"{"resource":"https://api.example.com"}"#);
    }

    #[test]
    fn service_methods() {
        let m = ProtectedResourceMetadata::builder("https://api.example.com")
            .build()
            .unwrap();
        let mut svc = m.service();
        let call = |svc: &mut MetadataService, method: Method| {
            let req = Request::builder().method(method).body(()).unwrap();
            svc.call(req).into_inner().unwrap()
        };
        let get = call(&mut svc, Method::GET);
        assert_eq!(get.status(), StatusCode::OK);
        assert_eq!(get.body(), m.json());
        assert_eq!(get.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(get.headers()[header::CACHE_CONTROL], "public, max-age=3600");
        assert_eq!(get.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        let head = call(&mut svc, Method::HEAD);
        assert_eq!(head.status(), StatusCode::OK);
        assert!(head.body().is_empty());
        let post = call(&mut svc, Method::POST);
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(post.headers()[header::ALLOW], "GET, HEAD");
    }
}
