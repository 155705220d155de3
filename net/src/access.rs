//! Access: which token a request needs and whether the one it gave is enough, and which
//! hosts and browser origins the node answers. Shared by the HTTP API and WebSocket
//! streams.

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

/// The host of an authority (`host[:port]`, `[v6]:port`) without its port.
fn host_part(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        // One colon and digits after it: a port. More colons: a bare IPv6 address.
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => authority,
    }
}

/// Whether the node answers for `Host: host`: a page whose name an attacker controls and
/// points at this node (DNS rebinding) carries that name, which is not one of these.
fn host_allowed(c: &Config, host: Option<&str>) -> bool {
    let Some(host) = host else {
        return true;
    };
    let name = host_part(host.trim());
    if !c.allowed_hosts.is_empty() {
        return c
            .allowed_hosts
            .iter()
            .any(|a| a == "*" || host_part(a.trim()).eq_ignore_ascii_case(name));
    }
    let listen = c.listen.ip().to_string();
    let advertised = c.advertise_url.as_deref().map(|u| {
        host_part(
            u.split_once("://")
                .map_or(u, |(_, rest)| rest)
                .trim_end_matches('/'),
        )
    });
    ["localhost", "127.0.0.1", "::1", listen.as_str()]
        .into_iter()
        .chain(advertised)
        .any(|a| a.eq_ignore_ascii_case(name))
}

/// `host_allowed`, with the reason a refused request is told.
pub fn check_host(c: &Config, host: Option<&str>) -> Result<(), String> {
    if host_allowed(c, host) {
        return Ok(());
    }
    Err(format!(
        "host {} is not served here; add it to allowed_hosts",
        host.unwrap_or_default()
    ))
}

/// Whether a browser page on `origin` (if any) that reached the node as `host` may be
/// served: the origin must be the node's own, listed in `allowed_origins`, or a peer
/// node's (`peers`, asked only when needed). `Err` says why not, and what setting would
/// allow it.
pub fn check_origin(
    c: &Config,
    host: Option<&str>,
    origin: Option<&str>,
    peers: impl FnOnce() -> Vec<String>,
) -> Result<(), String> {
    if let Some(origin) = origin
        && !origin_allowed(origin, host, &c.allowed_origins)
        && !origin_allowed(origin, None, &peers())
    {
        return Err(format!(
            "origin {origin} is not allowed; add it to allowed_origins"
        ));
    }
    Ok(())
}

/// Same-origin unless listed: the `Origin` host must equal `Host`, or the origin must be
/// in the allow-list.
fn origin_allowed(origin: &str, host: Option<&str>, allowed: &[String]) -> bool {
    if allowed
        .iter()
        .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
    host.is_some_and(|h| h.eq_ignore_ascii_case(origin_host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_answered_by_default_and_when_listed() {
        let c = Config::defaults().unwrap();
        for host in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST",
            "[::1]:8080",
            "::1",
        ] {
            assert!(host_allowed(&c, Some(host)), "{host}");
        }
        assert!(host_allowed(&c, None), "not a browser");
        assert!(!host_allowed(&c, Some("evil.example:8080")));
        assert!(!host_allowed(&c, Some("127.0.0.1.evil.example")));
        let c = Config {
            advertise_url: Some("http://node-2.internal:8081/".into()),
            ..Config::defaults().unwrap()
        };
        assert!(host_allowed(&c, Some("node-2.internal:8081")));
        let c = Config {
            allowed_hosts: vec!["dash.example.com".into()],
            ..Config::defaults().unwrap()
        };
        assert!(host_allowed(&c, Some("dash.example.com")));
        assert!(
            !host_allowed(&c, Some("localhost:8080")),
            "the list replaces the default"
        );
        let c = Config {
            allowed_hosts: vec!["*".into()],
            ..Config::defaults().unwrap()
        };
        assert!(host_allowed(&c, Some("anything.example")));
    }

    #[test]
    fn origins() {
        assert!(origin_allowed(
            "http://127.0.0.1:8080",
            Some("127.0.0.1:8080"),
            &[]
        ));
        assert!(!origin_allowed(
            "http://evil.example",
            Some("127.0.0.1:8080"),
            &[]
        ));
        let list = vec!["https://dash.example.com".to_string()];
        assert!(origin_allowed(
            "https://dash.example.com",
            Some("10.0.0.1:8080"),
            &list
        ));
        assert!(!origin_allowed(
            "https://other.example.com",
            Some("10.0.0.1:8080"),
            &list
        ));
    }

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
