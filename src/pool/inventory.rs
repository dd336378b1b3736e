//! Reading the pool: one paginated node list and one paginated port list, whatever its size.

use crate::ironic::{Ironic, IronicError, NodeQuery, PortQuery};
use crate::pool::select::{PoolSnapshot, NODE_FIELDS, PORT_FIELDS};

pub fn load(client: &dyn Ironic) -> Result<PoolSnapshot, IronicError> {
    let nodes = client.list_nodes(&NodeQuery {
        fields: NODE_FIELDS.iter().map(|f| f.to_string()).collect(),
        ..Default::default()
    })?;
    let ports = client.list_ports(&PortQuery {
        fields: PORT_FIELDS.iter().map(|f| f.to_string()).collect(),
        ..Default::default()
    })?;
    Ok(PoolSnapshot::new(nodes, ports))
}
