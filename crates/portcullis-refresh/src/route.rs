//! Which endpoint a request is for: a plain function of the prefix, the
//! method and the path, tested by a table.

use http::Method;

/// An endpoint under the prefix, or a known path with the wrong method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// `POST {prefix}/refresh`.
    Refresh,
    /// `POST {prefix}/logout`.
    Logout,
    /// `POST {prefix}/logout-everywhere`.
    LogoutEverywhere,
    /// `GET {prefix}/sessions`.
    Sessions,
    /// `DELETE {prefix}/sessions/{id}`.
    Device(String),
    /// A known path with another method: 405 with this `Allow`.
    WrongMethod(&'static str),
}

/// The endpoint `method path` is for; `None` for every other request (the
/// inner service's, the application's login route among them).
impl Route {
    /// The endpoint's path template under the prefix (`/refresh`,
    /// `/sessions/{id}`): the route of its events when the application's
    /// route reader finds none (the layer answers before any router
    /// matches). `None` for a wrong method.
    pub(crate) const fn template(&self) -> Option<&'static str> {
        match self {
            Self::Refresh => Some("/refresh"),
            Self::Logout => Some("/logout"),
            Self::LogoutEverywhere => Some("/logout-everywhere"),
            Self::Sessions => Some("/sessions"),
            Self::Device(_) => Some("/sessions/{id}"),
            Self::WrongMethod(_) => None,
        }
    }
}

pub(crate) fn route(prefix: &str, method: &Method, path: &str) -> Option<Route> {
    let rest = path.strip_prefix(prefix)?;
    let (route, allowed) = match rest {
        "/refresh" => (Route::Refresh, Method::POST),
        "/logout" => (Route::Logout, Method::POST),
        "/logout-everywhere" => (Route::LogoutEverywhere, Method::POST),
        "/sessions" => (Route::Sessions, Method::GET),
        _ => match rest.strip_prefix("/sessions/") {
            Some(id) if !id.is_empty() && !id.contains('/') => {
                (Route::Device(id.to_owned()), Method::DELETE)
            }
            _ => return None,
        },
    };
    Some(if *method == allowed {
        route
    } else if matches!(route, Route::Device(_)) {
        Route::WrongMethod("DELETE")
    } else {
        Route::WrongMethod("POST, GET")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_table() {
        let p = "/auth";
        let cases: &[(Method, &str, Option<Route>)] = &[
            (Method::POST, "/auth/refresh", Some(Route::Refresh)),
            (
                Method::GET,
                "/auth/refresh",
                Some(Route::WrongMethod("POST, GET")),
            ),
            (Method::POST, "/auth/logout", Some(Route::Logout)),
            (
                Method::POST,
                "/auth/logout-everywhere",
                Some(Route::LogoutEverywhere),
            ),
            (Method::GET, "/auth/sessions", Some(Route::Sessions)),
            (
                Method::POST,
                "/auth/sessions",
                Some(Route::WrongMethod("POST, GET")),
            ),
            (
                Method::DELETE,
                "/auth/sessions/abc",
                Some(Route::Device("abc".into())),
            ),
            (
                Method::GET,
                "/auth/sessions/abc",
                Some(Route::WrongMethod("DELETE")),
            ),
            // The app's own route.
            (Method::POST, "/auth/login", None),
            (Method::DELETE, "/auth/sessions/a/b", None),
            (Method::DELETE, "/auth/sessions/", None),
            (Method::POST, "/authx/refresh", None),
            (Method::GET, "/api/me", None),
        ];
        for (method, path, want) in cases {
            assert_eq!(route(p, method, path), *want, "{method} {path}");
        }
    }
}
