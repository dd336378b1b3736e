//! Keystone v3: the token request body for the two supported methods, and the baremetal
//! endpoint from the token's catalog. The HTTP exchange itself runs through the client (so it is
//! counted, logged and retried like any other request).

use serde_json::{json, Value};

use crate::config::IronicAuth;

use super::error::IronicError;

/// `{auth_url}/auth/tokens`, accepting auth URLs with or without the `/v3` suffix.
pub fn tokens_url(auth_url: &str) -> String {
    let base = auth_url.trim().trim_end_matches('/');
    if base.ends_with("/v3") {
        format!("{base}/auth/tokens")
    } else {
        format!("{base}/v3/auth/tokens")
    }
}

/// The auth URL and request body for a Keystone mode; `None` for the modes without Keystone.
pub fn token_request(auth: &IronicAuth) -> Option<(String, Value, Option<String>)> {
    match auth {
        IronicAuth::KeystonePassword {
            auth_url,
            username,
            password,
            user_domain_name,
            project_name,
            project_domain_name,
            region_name,
        } => Some((
            tokens_url(auth_url),
            json!({"auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {"user": {
                        "name": username,
                        "domain": {"name": user_domain_name},
                        "password": password.expose(),
                    }},
                },
                "scope": {"project": {
                    "name": project_name,
                    "domain": {"name": project_domain_name},
                }},
            }}),
            region_name.clone(),
        )),
        IronicAuth::KeystoneApplicationCredential {
            auth_url,
            application_credential_id,
            application_credential_secret,
            region_name,
        } => Some((
            tokens_url(auth_url),
            json!({"auth": {"identity": {
                "methods": ["application_credential"],
                "application_credential": {
                    "id": application_credential_id,
                    "secret": application_credential_secret.expose(),
                },
            }}}),
            region_name.clone(),
        )),
        _ => None,
    }
}

/// Who a Keystone mode authenticates as, for messages: names and ids, never the secret.
pub fn identity(auth: &IronicAuth) -> String {
    match auth {
        IronicAuth::KeystonePassword {
            username,
            user_domain_name,
            project_name,
            project_domain_name,
            ..
        } => format!(
            "the password of user '{username}' (domain '{user_domain_name}') for project \
             '{project_name}' (domain '{project_domain_name}')"
        ),
        IronicAuth::KeystoneApplicationCredential {
            application_credential_id,
            ..
        } => format!("application credential '{application_credential_id}' or its secret"),
        _ => "no Keystone credentials".into(),
    }
}

/// The public `baremetal` endpoint of the token's catalog, in `region` when given, without a
/// trailing `/` or `/v1` (the client appends `/v1/...` itself).
pub fn baremetal_endpoint(token_body: &Value, region: Option<&str>) -> Result<String, IronicError> {
    let catalog = token_body
        .pointer("/token/catalog")
        .and_then(Value::as_array)
        .ok_or_else(|| IronicError::Auth {
            message: "the Keystone token has no service catalog; set ironic.url".into(),
        })?;
    let services = catalog
        .iter()
        .filter(|s| s.get("type").and_then(Value::as_str) == Some("baremetal"));
    for service in services {
        let endpoints = service
            .get("endpoints")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for ep in endpoints {
            let field = |k: &str| ep.get(k).and_then(Value::as_str);
            if field("interface") != Some("public") {
                continue;
            }
            if let Some(r) = region {
                if field("region") != Some(r) && field("region_id") != Some(r) {
                    continue;
                }
            }
            if let Some(url) = field("url") {
                return Ok(normalize_base(url));
            }
        }
    }
    Err(IronicError::Auth {
        message: format!(
            "the Keystone catalog has no public baremetal endpoint{}; set ironic.url",
            region
                .map(|r| format!(" in region {r}"))
                .unwrap_or_default()
        ),
    })
}

/// Base URL without trailing `/` or `/v1`.
pub fn normalize_base(url: &str) -> String {
    let t = url.trim().trim_end_matches('/');
    t.strip_suffix("/v1").unwrap_or(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironic_cpi_common::Secret;

    #[test]
    fn urls() {
        assert_eq!(
            tokens_url("http://k:5000/v3/"),
            "http://k:5000/v3/auth/tokens"
        );
        assert_eq!(tokens_url("http://k:5000"), "http://k:5000/v3/auth/tokens");
        assert_eq!(normalize_base("http://i:6385/v1/"), "http://i:6385");
        assert_eq!(normalize_base("https://h/baremetal"), "https://h/baremetal");
    }

    #[test]
    fn password_body() {
        let auth = IronicAuth::KeystonePassword {
            auth_url: "http://k/v3".into(),
            username: "u".into(),
            password: Secret::new("pw"),
            user_domain_name: "Default".into(),
            project_name: "p".into(),
            project_domain_name: "Default".into(),
            region_name: Some("R1".into()),
        };
        let (url, body, region) = token_request(&auth).unwrap();
        assert_eq!(url, "http://k/v3/auth/tokens");
        assert_eq!(
            body["auth"]["identity"]["password"]["user"]["password"],
            "pw"
        );
        assert_eq!(body["auth"]["scope"]["project"]["name"], "p");
        assert_eq!(region.as_deref(), Some("R1"));
        assert!(token_request(&IronicAuth::None).is_none());
    }

    #[test]
    fn identity_names_everything_but_the_secret() {
        let auth = IronicAuth::KeystonePassword {
            auth_url: "http://k/v3".into(),
            username: "u".into(),
            password: Secret::new("pw-secret"),
            user_domain_name: "D1".into(),
            project_name: "p".into(),
            project_domain_name: "D2".into(),
            region_name: None,
        };
        let who = identity(&auth);
        for part in ["'u'", "'D1'", "'p'", "'D2'"] {
            assert!(who.contains(part), "{who} lacks {part}");
        }
        assert!(!who.contains("pw-secret"));
        let auth = IronicAuth::KeystoneApplicationCredential {
            auth_url: "http://k/v3".into(),
            application_credential_id: "ac-1".into(),
            application_credential_secret: Secret::new("ac-secret"),
            region_name: None,
        };
        let who = identity(&auth);
        assert!(
            who.contains("'ac-1'") && !who.contains("ac-secret"),
            "{who}"
        );
    }

    #[test]
    fn catalog_lookup() {
        let body = json!({"token": {"catalog": [
            {"type": "identity", "endpoints": [{"interface": "public", "url": "http://k"}]},
            {"type": "baremetal", "endpoints": [
                {"interface": "internal", "region": "R1", "url": "http://internal:6385"},
                {"interface": "public", "region": "R2", "url": "http://r2:6385/"},
                {"interface": "public", "region": "R1", "region_id": "R1", "url": "http://r1:6385/v1"},
            ]},
        ]}});
        assert_eq!(
            baremetal_endpoint(&body, Some("R1")).unwrap(),
            "http://r1:6385"
        );
        assert_eq!(baremetal_endpoint(&body, None).unwrap(), "http://r2:6385");
        let e = baremetal_endpoint(&body, Some("R9")).unwrap_err();
        assert!(e.to_string().contains("R9"), "{e}");
        assert!(baremetal_endpoint(&json!({"token": {}}), None).is_err());
    }
}
