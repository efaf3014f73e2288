//! Optional authentication of every request: HTTP basic or a bearer token, read once at start
//! from a credentials file. Compared in constant time.

use std::path::Path;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use super::settings::WebAuth;

/// What a request must present.
#[derive(Clone)]
pub struct Credentials {
    kind: WebAuth,
    /// The exact `Authorization` header value expected.
    expected: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {why}")]
    Invalid { path: String, why: &'static str },
}

impl Credentials {
    /// `None` for `auth = "none"`.
    pub fn load(kind: WebAuth, file: Option<&Path>) -> Result<Option<Credentials>, AuthError> {
        let Some(file) = file.filter(|_| kind != WebAuth::None) else { return Ok(None) };
        let path = file.display().to_string();
        let text = std::fs::read_to_string(file).map_err(|source| AuthError::Read { path: path.clone(), source })?;
        let secret = text.trim();
        let expected = match kind {
            WebAuth::Basic => {
                if !secret.contains(':') || secret.lines().count() != 1 {
                    return Err(AuthError::Invalid { path, why: "basic auth needs one line `user:password`" });
                }
                format!("Basic {}", B64.encode(secret))
            }
            _ => {
                if secret.len() < 16 || secret.contains(char::is_whitespace) {
                    return Err(AuthError::Invalid {
                        path,
                        why: "a bearer token needs 16 or more characters, no spaces",
                    });
                }
                format!("Bearer {secret}")
            }
        };
        Ok(Some(Credentials { kind, expected: expected.into_bytes() }))
    }

    fn accepts(&self, presented: Option<&HeaderValue>) -> bool {
        presented.is_some_and(|v| constant_time_eq(v.as_bytes(), &self.expected))
    }
}

/// Equal in a time that depends on the lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// The middleware: 401 with a challenge unless the request carries the credentials.
pub async fn require(State(creds): State<Option<Credentials>>, request: Request, next: Next) -> Response {
    let Some(c) = creds else { return next.run(request).await };
    if c.accepts(request.headers().get(header::AUTHORIZATION)) {
        return next.run(request).await;
    }
    let challenge = match c.kind {
        WebAuth::Basic => r#"Basic realm="edge-agent", charset="UTF-8""#,
        _ => r#"Bearer realm="edge-agent""#,
    };
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, challenge)], "authentication required\n").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_and_bearer_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("web");
        std::fs::write(&f, "ops:s3cret\n").unwrap();
        let c = Credentials::load(WebAuth::Basic, Some(&f)).unwrap().unwrap();
        assert!(c.accepts(Some(&HeaderValue::from_static("Basic b3BzOnMzY3JldA=="))));
        assert!(!c.accepts(Some(&HeaderValue::from_static("Basic b3BzOnMzY3JldB=="))));
        assert!(!c.accepts(None));
        assert!(Credentials::load(WebAuth::Bearer, Some(&f)).is_err(), "too short for a token");
        std::fs::write(&f, "0123456789abcdef0123").unwrap();
        let c = Credentials::load(WebAuth::Bearer, Some(&f)).unwrap().unwrap();
        assert!(c.accepts(Some(&HeaderValue::from_static("Bearer 0123456789abcdef0123"))));
        assert!(!c.accepts(Some(&HeaderValue::from_static("Bearer 0123456789abcdef012"))));
        std::fs::write(&f, "no colon").unwrap();
        assert!(Credentials::load(WebAuth::Basic, Some(&f)).is_err());
        assert!(Credentials::load(WebAuth::None, Some(&f)).unwrap().is_none());
    }
}
