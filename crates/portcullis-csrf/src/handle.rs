//! The per-request handle that renders and checks tokens, and the rendered
//! [`CsrfToken`].

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use http::{HeaderName, HeaderValue, Request};
use portcullis_core::OpaqueToken;
use portcullis_core::cookie::find_cookie;
#[cfg(feature = "session")]
use portcullis_session::{Session, SessionError, SessionErrorKind};

use crate::config::BindingKind;
use crate::error::{CsrfError, CsrfErrorKind};
use crate::policy::{Policy, TokenMode};
use crate::token::{self, Bound, PART, SESSION_RAW, SIGNED_RAW};

/// The session key of the synchronizer secret. It starts with
/// `portcullis_session::RENEW_SCOPED_PREFIX`, so the
/// session drops it whenever the id is renewed (login).
pub const SESSION_SECRET_KEY: &str = "~renew:csrf-secret";

/// A binding read when the request arrived.
enum SyncBinding {
    None,
    Some(Vec<u8>),
    /// The binding cookie appeared twice or was unreadable: never verifies.
    Invalid,
}

/// Renders tokens for the current request; [`CsrfLayer`](crate::CsrfLayer)
/// puts one into the request extensions of every request when tokens are
/// on.
///
/// For tonic or hyper: `req.extensions().get::<CsrfHandle>()`, then
/// [`token`](CsrfHandle::token). Under axum, the [`CsrfToken`] extractor
/// does this for you; extract the handle itself when a token must be
/// rendered after something in the handler changed the session (a login
/// that renders a page instead of redirecting).
///
/// Cheap to clone. `Debug` shows no secret.
#[derive(Clone)]
pub struct CsrfHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    policy: Arc<Policy>,
    #[cfg(feature = "session")]
    session: Option<Session>,
    binding: SyncBinding,
    pre_session: Option<OpaqueToken>,
    new_pre_session: Mutex<Option<OpaqueToken>>,
    rendered: AtomicBool,
}

impl fmt::Debug for CsrfHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CsrfHandle")
            .field("rendered", &self.inner.rendered.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "session")]
fn session_error(e: &SessionError) -> CsrfError {
    CsrfError::new(match e.kind() {
        SessionErrorKind::LayerMissing => CsrfErrorKind::SessionLayerMissing,
        SessionErrorKind::Random => CsrfErrorKind::Random,
        _ => CsrfErrorKind::SessionUnavailable,
    })
}

impl CsrfHandle {
    pub(crate) fn new<B>(policy: Arc<Policy>, req: &Request<B>) -> Self {
        let headers = req.headers();
        let (binding, pre_session) = match &policy.mode {
            TokenMode::Signed { binding, .. } => {
                let binding = match binding {
                    BindingKind::Cookie(name) => match find_cookie(headers, name) {
                        Ok(Some(v)) => SyncBinding::Some(v.as_bytes().to_vec()),
                        Ok(None) => SyncBinding::None,
                        Err(_) => SyncBinding::Invalid,
                    },
                    BindingKind::Custom(f) => match f(headers, req.extensions()) {
                        Some(v) => SyncBinding::Some(v),
                        None => SyncBinding::None,
                    },
                    _ => SyncBinding::None,
                };
                let pre = find_cookie(headers, policy.pre_cookie.full_name())
                    .ok()
                    .flatten()
                    .and_then(|v| OpaqueToken::parse(v).ok());
                (binding, pre)
            }
            _ => (SyncBinding::None, None),
        };
        Self {
            inner: Arc::new(HandleInner {
                #[cfg(feature = "session")]
                session: req.extensions().get::<Session>().cloned(),
                policy,
                binding,
                pre_session,
                new_pre_session: Mutex::new(None),
                rendered: AtomicBool::new(false),
            }),
        }
    }

    /// The form field name the layer reads (for templates).
    #[must_use]
    pub fn field_name(&self) -> &str {
        &self.inner.policy.field_name
    }

    /// The header name the layer reads (for scripts).
    #[must_use]
    pub fn header_name(&self) -> &HeaderName {
        &self.inner.policy.header_name
    }

    /// A freshly masked token: every call returns different text for the
    /// same secret (BREACH), and every one of them verifies.
    ///
    /// Whether this creates a session depends on the mode (see
    /// [`CsrfToken`]): signed mode never does (it sets the pre-session
    /// cookie on the response when the visitor has neither a session nor
    /// that cookie); session mode creates the secret the first time, and
    /// for a visitor without a session that starts an anonymous session.
    ///
    /// # Errors
    ///
    /// [`CsrfErrorKind::SessionUnavailable`] when the session store fails,
    /// [`CsrfErrorKind::SessionLayerMissing`] without `SessionLayer` (session
    /// bound modes), [`CsrfErrorKind::Random`] when the OS random source
    /// fails.
    pub async fn token(&self) -> Result<CsrfToken, CsrfError> {
        let policy = &self.inner.policy;
        let masked = match &policy.mode {
            #[cfg(feature = "session")]
            TokenMode::Session => {
                let secret = self.secret(true).await?;
                match secret {
                    Some(s) => token::mask(s.as_bytes())?,
                    None => return Err(CsrfError::new(CsrfErrorKind::Random)),
                }
            }
            TokenMode::Signed { keys, .. } => {
                let Some(key) = keys.first() else {
                    return Err(CsrfError::new(CsrfErrorKind::LayerMissing));
                };
                let raw = match self.session_binding().await? {
                    Some(b) => token::sign(key, Bound::Session(&b))?,
                    None => {
                        let pre = self.pre_session_or_new()?;
                        token::sign(key, Bound::PreSession(pre.as_bytes()))?
                    }
                };
                token::mask(&raw)?
            }
            TokenMode::OriginCheckOnly => return Err(CsrfError::new(CsrfErrorKind::LayerMissing)),
        };
        self.inner.rendered.store(true, Ordering::Relaxed);
        Ok(CsrfToken {
            value: masked,
            field: policy.field_name.to_string(),
            header: policy.header_name.clone(),
        })
    }

    /// Checks a token from the request against this request's secret or
    /// binding.
    pub(crate) async fn verify(&self, presented: &[u8]) -> Result<(), CsrfError> {
        let err = |k| Err(CsrfError::new(k));
        match &self.inner.policy.mode {
            #[cfg(feature = "session")]
            TokenMode::Session => {
                let raw = token::unmask::<SESSION_RAW>(presented)?;
                let Some(secret) = self.secret(false).await? else {
                    return err(CsrfErrorKind::Expired);
                };
                if token::same(&raw, secret.as_bytes()) {
                    Ok(())
                } else {
                    err(CsrfErrorKind::Mismatch)
                }
            }
            TokenMode::Signed { keys, .. } => {
                let raw = token::unmask::<SIGNED_RAW>(presented)?;
                if matches!(self.inner.binding, SyncBinding::Invalid) {
                    return err(CsrfErrorKind::Mismatch);
                }
                let ok = match self.session_binding().await? {
                    Some(b) => token::verify_signed(keys, Bound::Session(&b), &raw),
                    None => match &self.inner.pre_session {
                        Some(p) => {
                            token::verify_signed(keys, Bound::PreSession(p.as_bytes()), &raw)
                        }
                        None => return err(CsrfErrorKind::Expired),
                    },
                };
                if ok {
                    Ok(())
                } else {
                    err(CsrfErrorKind::Mismatch)
                }
            }
            TokenMode::OriginCheckOnly => Ok(()),
        }
    }

    /// The synchronizer secret; created when `create` and absent.
    #[cfg(feature = "session")]
    async fn secret(&self, create: bool) -> Result<Option<OpaqueToken>, CsrfError> {
        let Some(session) = &self.inner.session else {
            return Err(CsrfError::new(CsrfErrorKind::SessionLayerMissing));
        };
        let stored = match session.get::<String>(SESSION_SECRET_KEY).await {
            Ok(v) => v.and_then(|s| OpaqueToken::parse(&s).ok()),
            // A value of another type under our key: treat it as absent.
            Err(e) if e.kind() == SessionErrorKind::Serialization => None,
            Err(e) => return Err(session_error(&e)),
        };
        if stored.is_some() || !create {
            return Ok(stored);
        }
        let secret = OpaqueToken::generate().map_err(|_| CsrfError::new(CsrfErrorKind::Random))?;
        session
            .insert(SESSION_SECRET_KEY, secret.to_encoded())
            .await
            .map_err(|e| session_error(&e))?;
        Ok(Some(secret))
    }

    /// The session binding of a signed token, if the visitor has one.
    async fn session_binding(&self) -> Result<Option<Vec<u8>>, CsrfError> {
        let TokenMode::Signed { binding, .. } = &self.inner.policy.mode else {
            return Ok(None);
        };
        match binding {
            #[cfg(feature = "session")]
            BindingKind::Session => {
                let Some(session) = &self.inner.session else {
                    return Err(CsrfError::new(CsrfErrorKind::SessionLayerMissing));
                };
                let info = session.info().await.map_err(|e| session_error(&e))?;
                Ok(info.map(|i| i.id.into_bytes()))
            }
            _ => Ok(match &self.inner.binding {
                SyncBinding::Some(b) => Some(b.clone()),
                SyncBinding::None | SyncBinding::Invalid => None,
            }),
        }
    }

    fn pre_session_or_new(&self) -> Result<OpaqueToken, CsrfError> {
        if let Some(p) = &self.inner.pre_session {
            return Ok(p.clone());
        }
        let mut new = self
            .inner
            .new_pre_session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(p) = &*new {
            return Ok(p.clone());
        }
        let p = OpaqueToken::generate().map_err(|_| CsrfError::new(CsrfErrorKind::Random))?;
        *new = Some(p.clone());
        Ok(p)
    }

    /// The `Set-Cookie` for a pre-session id created in this request.
    pub(crate) fn new_pre_session_cookie(&self) -> Option<HeaderValue> {
        let new = self
            .inner
            .new_pre_session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        new.as_ref().map(|p| {
            self.inner
                .policy
                .pre_cookie
                .set_cookie(&p.to_encoded(), None)
        })
    }

    /// Whether a token was rendered for this request.
    pub(crate) fn rendered(&self) -> bool {
        self.inner.rendered.load(Ordering::Relaxed)
    }
}

// A secret is exactly one token part.
const _: () = assert!(SESSION_RAW == PART);

/// A masked CSRF token, ready for a template or a JSON response.
///
/// Under axum (feature `axum`) it is an extractor; elsewhere, get one from
/// [`CsrfHandle::token`]. Each one is masked afresh. `Debug` prints
/// `REDACTED`; it serializes (serde) as the token string.
///
/// # Does extracting it create a session?
///
/// - **Signed mode** ([`CsrfConfig::signed`](crate::CsrfConfig::signed)):
///   **no**, never. A visitor without a session gets a token bound to the
///   `__Host-csrf` pre-session cookie, which the response sets; the
///   session is used only when one already exists
///   (`SignedBinding::session` reads its id, and writes nothing). The session store stays untouched, so a
///   login page costs no server state per visitor.
/// - **Session mode** (`CsrfConfig::session`): **yes**, for a visitor
///   without a session. The secret lives in the session, so the first
///   token rendered starts an anonymous session (a store write and a
///   session cookie); later tokens reuse it.
///
/// ```
/// # fn page(token: portcullis_csrf::CsrfToken) -> String {
/// format!(
///     "<form method=post action=/profile>{}<input name=display_name></form>",
///     token.hidden_input()
/// )
/// # }
/// ```
#[derive(Clone)]
pub struct CsrfToken {
    value: String,
    field: String,
    header: HeaderName,
}

impl CsrfToken {
    /// The token text (base64url: safe in HTML attributes, headers and
    /// JSON without escaping).
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.value
    }

    /// The form field name the layer reads.
    #[must_use]
    pub fn field_name(&self) -> &str {
        &self.field
    }

    /// The header name the layer reads.
    #[must_use]
    pub const fn header_name(&self) -> &HeaderName {
        &self.header
    }

    /// `<input type="hidden" name="csrf_token" value="...">`, for a form.
    #[must_use]
    pub fn hidden_input(&self) -> String {
        // The field name is validated (no quotes or markup) when the layer is
        // built; the value is base64url.
        format!(
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            self.field, self.value
        )
    }
}

impl fmt::Debug for CsrfToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CsrfToken(REDACTED)")
    }
}

impl serde::Serialize for CsrfToken {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_is_redacted() {
        let token = CsrfToken {
            value: "c2VjcmV0LXRva2VuLXRleHQ".into(),
            field: "csrf_token".into(),
            header: HeaderName::from_static("x-csrf-token"),
        };
        let dbg = format!("{token:?}");
        assert_eq!(dbg, "CsrfToken(REDACTED)");
        assert_eq!(
            token.hidden_input(),
            "<input type=\"hidden\" name=\"csrf_token\" value=\"c2VjcmV0LXRva2VuLXRleHQ\">"
        );
        assert_eq!(
            serde_json::to_string(&token).unwrap(),
            "\"c2VjcmV0LXRva2VuLXRleHQ\"",
            "serializes as the token string"
        );
    }
}
