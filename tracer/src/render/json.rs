//! JSON Lines records: `hop`, `packet` and `stats`. Later versions add fields;
//! none changes meaning.
use serde_json::{json, Map, Value};

use super::Stats;
use crate::names::View;
use crate::{
    diagnose::{Outcomes, Report},
    events::Hop,
    ruletrace::deciding_rule,
    track::Packet,
};

fn tuple_fields(obj: &mut Map<String, Value>, hop: Option<&Hop>) {
    let t = hop.and_then(|h| h.tuple);
    obj.insert("saddr".into(), json!(t.map(|t| t.saddr.to_string())));
    obj.insert("daddr".into(), json!(t.map(|t| t.daddr.to_string())));
    obj.insert("sport".into(), json!(t.map(|t| t.sport)));
    obj.insert("dport".into(), json!(t.map(|t| t.dport)));
    obj.insert("proto".into(), json!(t.map(|t| t.proto_name())));
}

pub fn hop(packet: u64, hop: &Hop, view: &mut View) -> Value {
    let mut obj = Map::new();
    obj.insert("type".into(), json!("hop"));
    obj.insert("packet".into(), json!(packet));
    obj.insert("t_ns".into(), json!(hop.t_ns));
    obj.insert("netns".into(), json!(hop.netns));
    obj.insert("netns_name".into(), json!(view.netns_name(hop.netns)));
    obj.insert("ifname".into(), json!(hop.ifname));
    obj.insert("ifindex".into(), json!(hop.ifindex));
    obj.insert("kind".into(), json!(hop.kind.as_str()));
    obj.insert("hook".into(), json!(hop.hook.map(|h| h.as_str())));
    obj.insert("verdict".into(), json!(hop.verdict));
    obj.insert("reason".into(), json!(view.reason(hop)));
    obj.insert("location".into(), json!(view.location(hop)));
    tuple_fields(&mut obj, Some(hop));
    obj.insert("tcp_flags".into(), json!(hop.tcp_flags));
    obj.insert("len".into(), json!(hop.len));
    if let Some(r) = hop.rule.as_deref() {
        obj.insert("verdict".into(), json!(r.verdict));
        obj.insert("table".into(), json!(r.table));
        obj.insert("family".into(), json!(r.family));
        obj.insert("chain".into(), json!(r.chain));
        obj.insert("rule_handle".into(), json!(r.handle));
        obj.insert("rule_index".into(), json!(r.index));
        obj.insert("rule".into(), json!(r.text));
        obj.insert("policy".into(), json!(r.policy));
    }
    Value::Object(obj)
}

fn deciding_fields(obj: &mut Map<String, Value>, p: &Packet) {
    let r = deciding_rule(p);
    obj.insert("table".into(), json!(r.map(|r| &r.table)));
    obj.insert("chain".into(), json!(r.map(|r| &r.chain)));
    obj.insert("rule_index".into(), json!(r.and_then(|r| r.index)));
    obj.insert("rule".into(), json!(r.and_then(|r| r.text.as_ref())));
    obj.insert("policy".into(), json!(r.map(|r| r.policy)));
}

pub fn packet(p: &Packet, view: &mut View) -> Value {
    let at = p.fate.at.and_then(|i| p.hops.get(i));
    let mut obj = Map::new();
    obj.insert("type".into(), json!("packet"));
    obj.insert("packet".into(), json!(p.id));
    obj.insert("fate".into(), json!(p.fate.kind.as_str()));
    obj.insert("hook".into(), json!(p.fate.hook.map(|h| h.as_str())));
    obj.insert("reason".into(), json!(at.and_then(|h| view.reason(h))));
    obj.insert("location".into(), json!(at.and_then(|h| view.location(h))));
    obj.insert("netns".into(), json!(at.map(|h| h.netns)));
    obj.insert(
        "netns_name".into(),
        json!(at.and_then(|h| view.netns_name(h.netns))),
    );
    obj.insert("ifname".into(), json!(at.map(|h| h.ifname.clone())));
    let first = p.hops.iter().find(|h| h.tuple.is_some());
    tuple_fields(&mut obj, first);
    let last = p.hops.iter().rev().find(|h| h.tuple.is_some());
    if last.and_then(|h| h.tuple) != first.and_then(|h| h.tuple) {
        let mut nat = Map::new();
        tuple_fields(&mut nat, last);
        obj.insert("final".into(), Value::Object(nat));
    }
    deciding_fields(&mut obj, p);
    obj.insert("hops".into(), json!(p.hops.len()));
    obj.insert("filter".into(), json!(p.hops.first().map(|h| h.filter)));
    Value::Object(obj)
}

pub fn stats(s: &Stats) -> Value {
    json!({
        "type": "stats",
        "tier": s.tier,
        "packets": s.packets,
        "events": s.events,
        "sent": s.sent,
        "lost": s.lost,
        "undecodable": s.bad,
        "evicted": s.evicted,
        "rule_overflows": s.rule_overflows,
    })
}

/// The `packet` record with its direction and plain-language diagnosis.
pub fn packet_with(p: &Packet, view: &mut View, report: &Report) -> Value {
    let mut v = packet(p, view);
    if let Value::Object(obj) = &mut v {
        obj.insert("direction".into(), json!(report.direction.as_str()));
        obj.insert("diagnosis".into(), json!(report.diagnosis));
        let container = p
            .hops
            .iter()
            .rev()
            .find_map(|h| view.netns.container(h.netns));
        obj.insert("container".into(), json!(container));
    }
    v
}

/// The exit-time `summary` record: verdicts grouped, and connections.
pub fn summary(o: &Outcomes) -> Value {
    let groups: Vec<Value> = o
        .groups()
        .into_iter()
        .map(|(d, n)| json!({"cause": d.cause, "message": d.message, "advice": d.advice, "packets": n}))
        .collect();
    json!({"type": "summary", "outcomes": groups, "connections": o.connections()})
}
