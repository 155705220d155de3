//! Access tokens: which token a request needs, and whether the one it gave is enough.
//! Shared by the HTTP API and WebSocket streams.

use crate::config::Config;

/// What a request needs to be allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Open,
    Read,
    Ingest,
    Admin,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("missing Authorization: Bearer <token>")]
    Missing,
    #[error("invalid token")]
    Invalid,
    /// A valid token of another kind: `given` names it, `needed` the one required.
    #[error("the {given} token cannot do this: it needs the {needed} token")]
    WrongKind {
        given: &'static str,
        needed: &'static str,
    },
}

impl Access {
    /// The name of the token this access needs.
    fn token_name(self) -> &'static str {
        match self {
            Access::Open => "no",
            Access::Read => "read (or admin)",
            Access::Ingest => "ingest",
            Access::Admin => "admin",
        }
    }
}

/// Compares without stopping at the first difference, so timing does not leak a prefix.
fn same_secret(given: &str, expected: &str) -> bool {
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Whether the token `given` grants `access` under the configured tokens (read access is
/// also granted by the admin token).
pub fn allows(c: &Config, access: Access, given: Option<&str>) -> Result<(), Denied> {
    let required: Vec<&str> = match access {
        Access::Open => return Ok(()),
        Access::Read => match &c.read_token {
            None => return Ok(()),
            Some(t) => [Some(t), c.admin_token.as_ref()]
                .into_iter()
                .flatten()
                .map(String::as_str)
                .collect(),
        },
        Access::Ingest => match &c.ingest_token {
            None => return Ok(()),
            Some(t) => vec![t.as_str()],
        },
        Access::Admin => match &c.admin_token {
            None => return Ok(()),
            Some(t) => vec![t.as_str()],
        },
    };
    match given {
        None => Err(Denied::Missing),
        Some(given) if required.iter().any(|t| same_secret(given, t)) => Ok(()),
        Some(given) => {
            let kinds = [
                ("admin", &c.admin_token),
                ("ingest", &c.ingest_token),
                ("read", &c.read_token),
            ];
            match kinds
                .into_iter()
                .find(|(_, t)| t.as_deref().is_some_and(|t| same_secret(given, t)))
            {
                Some((kind, _)) => Err(Denied::WrongKind {
                    given: kind,
                    needed: access.token_name(),
                }),
                None => Err(Denied::Invalid),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abd", "abc"));
        assert!(!same_secret("ab", "abc"));
    }

    #[test]
    fn admin_token_also_reads() {
        let c = Config {
            read_token: Some("r".into()),
            admin_token: Some("a".into()),
            ..Config::defaults().unwrap()
        };
        assert_eq!(allows(&c, Access::Read, Some("a")), Ok(()));
        assert_eq!(allows(&c, Access::Read, Some("r")), Ok(()));
        assert_eq!(
            allows(&c, Access::Admin, Some("r")),
            Err(Denied::WrongKind {
                given: "read",
                needed: "admin"
            })
        );
        assert_eq!(allows(&c, Access::Admin, Some("x")), Err(Denied::Invalid));
        assert_eq!(allows(&c, Access::Read, None), Err(Denied::Missing));
        assert_eq!(allows(&c, Access::Ingest, None), Ok(()));
    }
}
