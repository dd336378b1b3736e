//! Filters for the list calls, turned into Ironic's query parameters.
//!
//! Ironic accepts `resource_class` from microversion 1.21, `conductor_group` from 1.46 and
//! `owner` from 1.50 (406 before); callers gate them with [`NodeQuery::filter_since`].

/// Filters for `GET /v1/nodes`. Empty `fields` means every field (`detail=true`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeQuery {
    pub provision_state: Option<String>,
    pub associated: Option<bool>,
    pub maintenance: Option<bool>,
    pub resource_class: Option<String>,
    pub conductor_group: Option<String>,
    pub owner: Option<String>,
    pub instance_uuid: Option<String>,
    pub fields: Vec<String>,
    /// Stop after this many nodes (fewer requests when the caller needs only a few).
    pub limit_total: Option<usize>,
}

impl NodeQuery {
    /// The microversion from which Ironic takes `filter` (a `NodeQuery` member name), if it
    /// takes it at all.
    pub fn filter_since(filter: &str) -> Option<(u32, u32)> {
        match filter {
            "provision_state" => Some((1, 9)),
            "associated" | "maintenance" | "instance_uuid" => Some((1, 1)),
            "resource_class" => Some((1, 21)),
            "conductor_group" => Some((1, 46)),
            "owner" => Some((1, 50)),
            _ => None,
        }
    }

    /// The query string pairs this query sends.
    pub fn params(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        push(&mut p, "provision_state", &self.provision_state);
        push_bool(&mut p, "associated", self.associated);
        push_bool(&mut p, "maintenance", self.maintenance);
        push(&mut p, "resource_class", &self.resource_class);
        push(&mut p, "conductor_group", &self.conductor_group);
        push(&mut p, "owner", &self.owner);
        push(&mut p, "instance_uuid", &self.instance_uuid);
        p
    }
}

/// Filters for `GET /v1/ports`. `node_uuid` uses `?node=`, which accepts a UUID or a name
/// (`GET /v1/nodes/<name>/ports` is broken in Ironic 39).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PortQuery {
    pub address: Option<String>,
    pub node_uuid: Option<String>,
    pub fields: Vec<String>,
}

impl PortQuery {
    pub(crate) fn params(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        push(&mut p, "address", &self.address);
        push(&mut p, "node", &self.node_uuid);
        p
    }
}

fn push(p: &mut Vec<(&'static str, String)>, key: &'static str, v: &Option<String>) {
    if let Some(v) = v {
        p.push((key, v.clone()));
    }
}

fn push_bool(p: &mut Vec<(&'static str, String)>, key: &'static str, v: Option<bool>) {
    if let Some(v) = v {
        p.push((key, v.to_string()));
    }
}

/// `path?k=v&...`, form-encoded.
pub(crate) fn with_query(path: &str, params: &[(&str, String)]) -> String {
    if params.is_empty() {
        return path.to_string();
    }
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        s.append_pair(k, v);
    }
    format!("{path}?{}", s.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_query_params() {
        let q = NodeQuery {
            provision_state: Some("available".into()),
            associated: Some(false),
            resource_class: Some("bm gold".into()),
            ..Default::default()
        };
        let s = with_query("/v1/nodes", &q.params());
        assert_eq!(
            s,
            "/v1/nodes?provision_state=available&associated=false&resource_class=bm+gold"
        );
        assert_eq!(with_query("/v1/nodes", &[]), "/v1/nodes");
    }
}
