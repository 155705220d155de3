//! The dashboards routes: each becomes a read or an edit of the catalogue service, which
//! answers once the change is stored and installed everywhere.

use std::rc::Rc;

use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::ApiError;
use crate::catalogue::Edit;
use crate::http::{Request, Response};
use crate::service::{Services, catalogue};

/// Methods the `/dashboards` routes answer (which one a path takes is checked below).
pub const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];

fn body<T: DeserializeOwned>(req: &Request) -> Result<T, ApiError> {
    decode(&req.body)
}

/// Most JSON tokens (keys and values) a dashboards request body may hold: 200 widgets and
/// a layout at their limits fit with room to spare. A body with more is refused before
/// it is read into a tree, which costs tens of bytes per value of a few bytes of text.
const MAX_BODY_TOKENS: usize = 1 << 18;

/// An upper bound of the keys and values in a JSON text: each one but the first follows
/// a `,`, `:`, `[` or `{` outside strings.
fn tokens_in(body: &[u8]) -> usize {
    let (mut n, mut in_string, mut escaped) = (1, false, false);
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if matches!(b, b',' | b':' | b'[' | b'{') {
            n += 1;
        }
    }
    n
}

/// Reads a dashboards request body (a dashboard, an update, a widget patch); the error
/// names the place (`add[0].window_seconds: invalid type ...`).
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::new(400, "a JSON body is required"));
    }
    let tokens = tokens_in(body);
    if tokens > MAX_BODY_TOKENS {
        return Err(ApiError::new(
            413,
            format!(
                "the body holds about {tokens} JSON keys and values; a dashboard takes at most {MAX_BODY_TOKENS}"
            ),
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let place = e.path().to_string();
        let inner = e.into_inner();
        match place.as_str() {
            "." => ApiError::new(400, format!("invalid body: {inner}")),
            _ => ApiError::new(400, format!("invalid body: {place}: {inner}")),
        }
    })?;
    de.end()
        .map_err(|e| ApiError::new(400, format!("invalid body: {e}")))?;
    Ok(value)
}

fn id(text: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text)
        .map_err(|_| ApiError::new(404, format!("no {what} {text} (ids are UUIDs)")))
}

/// Answers an edit: the dashboard after it with `status`, or 204 once deleted.
async fn edit(svc: &Rc<Services>, edit: Edit, status: u16) -> Result<Response, ApiError> {
    Ok(match catalogue::edit(svc, edit).await? {
        Some(d) => Response::json(status, &d),
        None => Response::empty(204),
    })
}

pub async fn handle(
    svc: &Rc<Services>,
    req: &Request,
    segments: &[&str],
) -> Result<Response, ApiError> {
    let method = req.method.as_str();
    let read = method == "GET" || method == "HEAD";
    match (segments, read) {
        (["dashboards"], true) => {
            let all = catalogue::encoded_list(svc).await?;
            Ok(Response::bytes(200, "application/json", all))
        }
        (["dashboards", d], true) => {
            let dashboard = catalogue::encoded(svc, id(d, "dashboard")?).await?;
            Ok(Response::bytes(200, "application/json", dashboard))
        }
        (["dashboards", d, "widgets", w, "snapshot"], true) => {
            let (d, w) = (id(d, "dashboard")?, id(w, "widget")?);
            Ok(Response::json(200, &catalogue::reading(svc, d, w).await?))
        }
        (["dashboards"], false) if method == "POST" => {
            edit(svc, Edit::Create(body(req)?), 201).await
        }
        (["dashboards", d], false) if method == "PUT" => {
            edit(svc, Edit::Update(id(d, "dashboard")?, body(req)?), 200).await
        }
        (["dashboards", d], false) if method == "DELETE" => {
            edit(svc, Edit::Delete(id(d, "dashboard")?), 204).await
        }
        (["dashboards", d, "widgets"], false) if method == "PATCH" => {
            edit(svc, Edit::Patch(id(d, "dashboard")?, body(req)?), 200).await
        }
        // A path the API has, asked with another method, is 405; any other path is 404.
        (["dashboards"] | ["dashboards", _] | ["dashboards", _, "widgets"], _)
        | (["dashboards", _, "widgets", _, "snapshot"], _) => Err(ApiError::new(
            405,
            format!("{method} is not allowed on {}", req.path),
        )),
        _ => Err(ApiError::new(404, format!("no route for {}", req.path))),
    }
}

#[cfg(test)]
mod tests {
    use super::tokens_in;

    #[test]
    fn tokens_are_counted_outside_strings_only() {
        assert_eq!(tokens_in(br#"{"a":[1,2,"x,y:[{\"]"]}"#), 6);
        assert_eq!(tokens_in(b"0"), 1);
        assert_eq!(tokens_in(&b"[0".repeat(1000)), 1001);
    }
}
