"""Grow a lab Ironic's pool fast: clone one node that the real Ironic brought to its state
(enrolled through the API; for deployed nodes, deployed by the CPI's own create_vm) COUNT times,
with its ports, straight into Ironic's SQLite database.

Enrolling through the API costs about 60 ms a node on 2 cores (50,000 nodes: most of an hour);
rows inserted here take a few seconds per 10,000. Every column comes from the template row read
through Ironic's own SQLAlchemy models (so JSON columns are encoded as Ironic encodes them); per
clone only what must be unique changes: the node's id, uuid and name, its instance_uuid (the VM
id) and the VM record's ids in `extra`, the ports' ids, uuids and MACs. A clone therefore looks
to the API exactly like the template: same driver and interfaces, provision and power state,
properties, instance_info and VM record.

Run with the lab venv's python (it imports Ironic):
    VENV/bin/python pool_fill.py DB TEMPLATE_UUID COUNT NAME_PREFIX FIRST_INDEX [RESOURCE_CLASS]
Names are NAME_PREFIX + the index zero-padded to 5 digits; MACs are derived from the node's
database id (02:be:<id, 3 bytes>:<nic>), so they never collide. Prints one JSON line.
"""

import json
import os
import sys
import time
import uuid

import sqlalchemy as sa
from ironic.db.sqlalchemy import models

NODES = models.Node.__table__
PORTS = models.Port.__table__


def uuid7():
    """A UUIDv7 like the CPI's VM ids: 48 bits of Unix milliseconds, then random bits."""
    ms = int(time.time() * 1000)
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms << 80) | (0x7 << 76) | (((rand >> 62) & 0xFFF) << 64) | (0b10 << 62)
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


def substitute(value, subs):
    """`value` with every template identifier replaced, in strings, dict keys and values."""
    if value is None or not subs:
        return value
    if isinstance(value, str):
        for old, new in subs:
            value = value.replace(old, new)
        return value
    if isinstance(value, (dict, list)):
        text = json.dumps(value)
        for old, new in subs:
            text = text.replace(old, new)
        return json.loads(text)
    return value


def vm_ids(template):
    """The identifiers of the template's VM (its id and agent id) that each clone renews."""
    ids = []
    if template["instance_uuid"]:
        ids.append(template["instance_uuid"])
    for record in ((template["extra"] or {}).get("bosh_vm") or {}).values():
        if isinstance(record, dict) and record.get("agent_id"):
            ids.append(record["agent_id"])
    return ids


def main():
    db, template_uuid, count, prefix, first = sys.argv[1:6]
    count, first = int(count), int(first)
    resource_class = sys.argv[6] if len(sys.argv) > 6 else None
    started = time.monotonic()
    engine = sa.create_engine(f"sqlite:///{db}", connect_args={"timeout": 60})
    # One transaction: Ironic (running meanwhile) sees all clones or none.
    with engine.begin() as conn:
        template = dict(
            conn.execute(sa.select(NODES).where(NODES.c.uuid == template_uuid)).mappings().one()
        )
        template_ports = [
            dict(p)
            for p in conn.execute(
                sa.select(PORTS).where(PORTS.c.node_id == template["id"]).order_by(PORTS.c.id)
            ).mappings()
        ]
        if any(p["name"] for p in template_ports):
            raise SystemExit("template ports have names (unique in Ironic): not cloned")
        next_node = conn.execute(sa.select(sa.func.max(NODES.c.id))).scalar() + 1
        next_port = (conn.execute(sa.select(sa.func.max(PORTS.c.id))).scalar() or 0) + 1
        template_vm_ids = vm_ids(template)
        nodes, ports = [], []
        for i in range(count):
            node_id = next_node + i
            name = f"{prefix}{first + i:05d}"
            subs = [(template["uuid"], str(uuid.uuid4()))]
            if template["name"]:
                subs.append((template["name"], name))
            subs += [(old, uuid7()) for old in template_vm_ids]
            node = {k: substitute(v, subs) for k, v in template.items()}
            node.update(id=node_id, name=name, allocation_id=None, reservation=None)
            if resource_class:
                node["resource_class"] = resource_class
            nodes.append(node)
            if node_id >= 1 << 24:
                raise SystemExit("node ids beyond 3 bytes: MACs would collide")
            for nic, port in enumerate(template_ports):
                mac = "02:be:%02x:%02x:%02x:%02x" % (
                    node_id >> 16, (node_id >> 8) & 0xFF, node_id & 0xFF, nic)
                ports.append(dict(port, id=next_port + len(ports), uuid=str(uuid.uuid4()),
                                  address=mac, node_id=node_id))
        if nodes:
            conn.execute(NODES.insert(), nodes)
        if ports:
            conn.execute(PORTS.insert(), ports)
    print(json.dumps({
        "nodes": len(nodes),
        "ports": len(ports),
        "seconds": round(time.monotonic() - started, 3),
        "template": {"provision_state": template["provision_state"],
                     "power_state": template["power_state"],
                     "driver": template["driver"],
                     "ports": len(template_ports),
                     "vm_ids_renewed": len(template_vm_ids)},
    }))


if __name__ == "__main__":
    main()
