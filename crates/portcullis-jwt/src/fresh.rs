//! `RequireFreshAuthLayer`: per-route requirements on the login behind a
//! token (how recent, `auth_time`; how strong, `acr`), refused with RFC
//! 9470's step-up challenge by the `RequireFreshAuth` service.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use portcullis_core::events::Events;
use portcullis_core::{ResponseBody, SharedClock, SystemClock};
use tower_layer::Layer;
use tower_service::Service;

use crate::claims::{Claims, NoCustomClaims};
use crate::error::{JwtError, JwtErrorKind};
use crate::require::guard_step;
use crate::service::ResponseFuture;
use crate::validation::DEFAULT_LEEWAY;

/// How far in the future (by the guard's clock) an `auth_time` may lie and
/// still count as "just now": clocks of instances differ by a little.
const FUTURE_SKEW: i64 = {
    let secs = DEFAULT_LEEWAY.as_secs();
    assert!(secs <= i64::MAX as u64);
    secs as i64
};

/// Why [`RequireFreshAuthLayer::acr`] refused its values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FreshAuthConfigError {
    /// No `acr` value at all: nothing could ever pass.
    #[error("at least one acr value is required")]
    NoAcrValues,
    /// A value that is empty, or holds a space, a quote, a backslash or a
    /// character outside visible ASCII (it would break the
    /// `acr_values="..."` challenge parameter, a space-separated list).
    #[error("invalid acr value: {0:?}")]
    InvalidAcrValue(String),
}

struct Rule {
    /// Whole seconds.
    max_age: Option<u64>,
    /// Accepted `acr` values, in preference order (empty: any).
    acr_values: Vec<String>,
    clock: SharedClock,
    events: Events,
}

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rule")
            .field("max_age", &self.max_age)
            .field("acr_values", &self.acr_values)
            .finish_non_exhaustive()
    }
}

/// Builds [`RequireFreshAuth`], which refuses requests whose verified
/// [`Claims`] come from a login that is too old (`auth_time`) or of the
/// wrong authentication context class (`acr`), for "sudo mode" routes
/// (change the password, delete the account, pay).
///
/// The refusal is RFC 9470's step-up challenge: 401 with
/// `WWW-Authenticate: Bearer error="insufficient_user_authentication",
/// error_description="...", max_age=600` and/or `acr_values="..."` (the
/// route's every requirement, so the client knows what the next login
/// must satisfy), and the problem+json body. A token without `auth_time`
/// is never fresh: [`JwtIssuer::token`](crate::JwtIssuer::token) mints
/// none, [`JwtIssuer::login_token`](crate::JwtIssuer::login_token) and
/// refresh families do.
///
/// **Step-up is a new login.** A refresh copies the login's `auth_time`
/// unchanged, so refreshing never makes a login fresh: the client sends
/// the user through the login form again (password, and the second factor
/// the `acr` needs), which starts a new token family with a new
/// `auth_time`, and retries the request with the new access token.
///
/// Put it inside a [`JwtLayer`](crate::JwtLayer) (for example with axum's
/// `route_layer`); a request that reaches it without claims gets 401.
/// Give it the clock the `JwtLayer` reads ([`clock`](Self::clock)).
///
/// ```
/// use std::time::Duration;
/// use axum::{Router, routing::post};
/// use portcullis_jwt::RequireFreshAuthLayer;
///
/// let sudo = RequireFreshAuthLayer::within(Duration::from_secs(10 * 60))
///     .and_acr(["urn:example:mfa"])
///     .unwrap();
/// let app: Router = Router::new()
///     .route("/account/password", post(|| async { "changed" }))
///     .route_layer(sudo);
/// ```
pub struct RequireFreshAuthLayer<T = NoCustomClaims> {
    rule: Arc<Rule>,
    _claims: PhantomData<fn() -> T>,
}

impl<T> Clone for RequireFreshAuthLayer<T> {
    fn clone(&self) -> Self {
        Self {
            rule: Arc::clone(&self.rule),
            _claims: PhantomData,
        }
    }
}

impl<T> fmt::Debug for RequireFreshAuthLayer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireFreshAuthLayer")
            .field("rule", &self.rule)
            .finish()
    }
}

/// Checks `values` for the `acr_values` parameter.
fn acr_values<I, S>(values: I) -> Result<Vec<String>, FreshAuthConfigError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let values: Vec<String> = values.into_iter().map(Into::into).collect();
    if values.is_empty() {
        return Err(FreshAuthConfigError::NoAcrValues);
    }
    for v in &values {
        let ok = !v.is_empty()
            && v.bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
        if !ok {
            return Err(FreshAuthConfigError::InvalidAcrValue(v.clone()));
        }
    }
    Ok(values)
}

impl RequireFreshAuthLayer {
    /// Requires a login (`auth_time`) at most `max_age` old (whole
    /// seconds; the fraction is dropped).
    #[must_use]
    pub fn within(max_age: Duration) -> Self {
        Self::from_rule(Rule {
            max_age: Some(max_age.as_secs()),
            acr_values: Vec::new(),
            clock: SystemClock::shared(),
            events: Events::default(),
        })
    }

    /// Requires a login whose `acr` is one of `values` (in the client's
    /// order of preference, as the challenge lists them).
    ///
    /// # Errors
    ///
    /// [`FreshAuthConfigError`] for no value, or a value that is empty or
    /// holds a space, a quote, a backslash or a non-visible character.
    pub fn acr<I, S>(values: I) -> Result<Self, FreshAuthConfigError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Ok(Self::from_rule(Rule {
            max_age: None,
            acr_values: acr_values(values)?,
            clock: SystemClock::shared(),
            events: Events::default(),
        }))
    }
}

impl<T> RequireFreshAuthLayer<T> {
    fn from_rule(rule: Rule) -> Self {
        Self {
            rule: Arc::new(rule),
            _claims: PhantomData,
        }
    }

    fn with(self, f: impl FnOnce(&mut Rule)) -> Self {
        let mut rule = Rule {
            max_age: self.rule.max_age,
            acr_values: self.rule.acr_values.clone(),
            clock: Arc::clone(&self.rule.clock),
            events: self.rule.events.clone(),
        };
        f(&mut rule);
        Self::from_rule(rule)
    }

    /// Also requires a login at most `max_age` old (replaces an earlier
    /// age).
    #[must_use]
    pub fn and_within(self, max_age: Duration) -> Self {
        self.with(|r| r.max_age = Some(max_age.as_secs()))
    }

    /// Also requires an `acr` among `values` (replaces earlier values).
    ///
    /// # Errors
    ///
    /// As [`acr`](RequireFreshAuthLayer::acr).
    pub fn and_acr<I, S>(self, values: I) -> Result<Self, FreshAuthConfigError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let values = acr_values(values)?;
        Ok(self.with(|r| r.acr_values = values))
    }

    /// Reads the time from `clock` (the one the `JwtLayer` reads; default
    /// the system clock).
    #[must_use]
    pub fn clock(self, clock: SharedClock) -> Self {
        self.with(|r| r.clock = clock)
    }

    /// Reports to `events` (default: nothing listens): a
    /// `reauth_required` event (reason `insufficient-user-authentication`,
    /// with the user) for every step-up refusal, `jwt_refused` (`missing`)
    /// for a request no `JwtLayer` verified, and the time each decision
    /// took (layer `require_fresh_auth`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use portcullis_core::events::Events;
    /// use portcullis_jwt::RequireFreshAuthLayer;
    ///
    /// let events = Events::new();
    /// let mut audit = events.subscribe("audit", 1024);
    /// let sudo = RequireFreshAuthLayer::within(Duration::from_secs(600)).events(events);
    /// # let _ = (sudo, audit.try_recv());
    /// ```
    #[must_use]
    pub fn events(self, events: Events) -> Self {
        self.with(|r| r.events = events)
    }

    /// For layers that decode application claims as `U`.
    #[must_use]
    pub fn for_claims<U>(self) -> RequireFreshAuthLayer<U> {
        RequireFreshAuthLayer {
            rule: self.rule,
            _claims: PhantomData,
        }
    }
}

/// Whether `claims` meet `rule` at `now` (seconds): `Ok`, a 401 without
/// claims, or the step-up refusal naming every requirement of the rule.
fn decide<T>(rule: &Rule, claims: Option<&Claims<T>>, now: i64) -> Result<(), JwtError> {
    let Some(claims) = claims else {
        return Err(JwtError::new(JwtErrorKind::Missing));
    };
    let reg = claims.registered();
    let acr_ok = rule.acr_values.is_empty()
        || reg
            .acr
            .as_deref()
            .is_some_and(|acr| rule.acr_values.iter().any(|v| v == acr));
    let fresh = rule.max_age.is_none_or(|max_age| {
        reg.auth_time.is_some_and(|at| {
            let age = now.saturating_sub(at);
            let max_age = i64::try_from(max_age).unwrap_or(i64::MAX);
            age >= -FUTURE_SKEW && age <= max_age
        })
    });
    if acr_ok && fresh {
        return Ok(());
    }
    let description = if acr_ok {
        "More recent authentication is required"
    } else {
        "A different authentication level is required"
    };
    let mut params = format!("error_description=\"{description}\"");
    if let Some(max_age) = rule.max_age {
        params.push_str(&format!(", max_age={max_age}"));
    }
    if !rule.acr_values.is_empty() {
        params.push_str(&format!(", acr_values=\"{}\"", rule.acr_values.join(" ")));
    }
    Err(JwtError::step_up(params))
}

impl<S, T> Layer<S> for RequireFreshAuthLayer<T> {
    type Service = RequireFreshAuth<S, T>;
    fn layer(&self, inner: S) -> Self::Service {
        RequireFreshAuth {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service built by [`RequireFreshAuthLayer`]: passes a request whose
/// login meets the requirements to the inner service, refuses the others.
pub struct RequireFreshAuth<S, T = NoCustomClaims> {
    inner: S,
    layer: RequireFreshAuthLayer<T>,
}

impl<S, T> RequireFreshAuth<S, T> {
    portcullis_core::inner_service_accessors!();
}

impl<S: Clone, T> Clone for RequireFreshAuth<S, T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S: fmt::Debug, T> fmt::Debug for RequireFreshAuth<S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireFreshAuth")
            .field("inner", &self.inner)
            .field("rule", &self.layer.rule)
            .finish()
    }
}

impl<S, T, ReqBody, ResBody> Service<Request<ReqBody>> for RequireFreshAuth<S, T>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    T: Send + Sync + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let rule = &self.layer.rule;
        let now = i64::try_from(rule.clock.now().secs()).unwrap_or(i64::MAX);
        guard_step(
            &mut self.inner,
            req,
            &rule.events,
            "require_fresh_auth",
            |_, claims: Option<&Claims<T>>| {
                let decision = decide(rule, claims, now);
                #[cfg(feature = "tracing")]
                if let Err(e) = &decision {
                    portcullis_core::event!(
                        debug,
                        reason = e.reason(),
                        "login not fresh or strong enough"
                    );
                }
                decision
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::RegisteredClaims;

    const NOW: i64 = 1_700_000_000;

    fn claims(json: &str) -> Claims<NoCustomClaims> {
        let registered: RegisteredClaims = serde_json::from_str(json).unwrap();
        Claims::new(registered, NoCustomClaims {})
    }

    fn rule(max_age: Option<u64>, acr: &[&str]) -> Rule {
        Rule {
            max_age,
            acr_values: acr.iter().map(|s| (*s).to_owned()).collect(),
            clock: SystemClock::shared(),
            events: Events::default(),
        }
    }

    #[test]
    fn decisions() {
        let at = |secs_ago: i64| claims(&format!(r#"{{"auth_time":{}}}"#, NOW - secs_ago));
        let gold_at = |secs_ago: i64| {
            claims(&format!(
                r#"{{"auth_time":{},"acr":"gold"}}"#,
                NOW - secs_ago
            ))
        };
        let none = claims("{}");
        let stale = r#"Bearer error="insufficient_user_authentication", error_description="More recent authentication is required", max_age=600"#;
        let weak = r#"Bearer error="insufficient_user_authentication", error_description="A different authentication level is required", acr_values="gold silver""#;
        let weak_both = r#"Bearer error="insufficient_user_authentication", error_description="A different authentication level is required", max_age=600, acr_values="gold""#;
        let stale_both = r#"Bearer error="insufficient_user_authentication", error_description="More recent authentication is required", max_age=600, acr_values="gold""#;
        // (rule, claims, the refusal's WWW-Authenticate; None = passes)
        let cases: Vec<(Rule, Option<Claims>, Option<&str>)> = vec![
            (rule(Some(600), &[]), Some(at(0)), None),
            (rule(Some(600), &[]), Some(at(600)), None),
            (rule(Some(600), &[]), Some(at(601)), Some(stale)),
            (rule(Some(600), &[]), Some(at(1200)), Some(stale)),
            (rule(Some(600), &[]), Some(none.clone()), Some(stale)),
            // A little clock skew is tolerated; an `auth_time` far ahead is not.
            (rule(Some(600), &[]), Some(at(-5)), None),
            (rule(Some(600), &[]), Some(at(-6)), Some(stale)),
            (rule(Some(0), &[]), Some(at(0)), None),
            (rule(None, &["gold", "silver"]), Some(gold_at(99_999)), None),
            (rule(None, &["gold", "silver"]), Some(at(0)), Some(weak)),
            (
                rule(None, &["gold", "silver"]),
                Some(claims(r#"{"acr":"bronze"}"#)),
                Some(weak),
            ),
            (rule(Some(600), &["gold"]), Some(gold_at(10)), None),
            (rule(Some(600), &["gold"]), Some(at(10)), Some(weak_both)),
            (
                rule(Some(600), &["gold"]),
                Some(gold_at(700)),
                Some(stale_both),
            ),
            (rule(Some(600), &[]), None, Some("Bearer")),
        ];
        for (i, (rule, claims, want)) in cases.into_iter().enumerate() {
            let got = decide(&rule, claims.as_ref(), NOW).err().map(|e| {
                let rejection = e.rejection(None, Duration::ZERO);
                assert_eq!(rejection.status(), 401, "case {i}");
                rejection.challenge().unwrap().to_str().unwrap().to_owned()
            });
            assert_eq!(got.as_deref(), want, "case {i}");
        }
    }

    #[test]
    fn acr_values_must_fit_the_challenge() {
        assert_eq!(
            RequireFreshAuthLayer::acr(Vec::<String>::new()).unwrap_err(),
            FreshAuthConfigError::NoAcrValues
        );
        for bad in ["", "a b", "a\"b", "a\\b", "é", "a\tb"] {
            assert_eq!(
                RequireFreshAuthLayer::acr([bad]).unwrap_err(),
                FreshAuthConfigError::InvalidAcrValue(bad.to_owned()),
                "{bad:?}"
            );
        }
        let ok = RequireFreshAuthLayer::acr(["urn:mace:incommon:iap:silver", "gold"]).unwrap();
        assert_eq!(ok.rule.acr_values.len(), 2);
        assert!(ok.rule.max_age.is_none());
        let both = ok.and_within(Duration::from_millis(90_900));
        assert_eq!(both.rule.max_age, Some(90), "whole seconds");
        assert!(both.and_acr(["a b"]).is_err());
    }
}
