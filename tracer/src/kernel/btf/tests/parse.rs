#![allow(clippy::unwrap_used)]

use super::builder::BtfBuilder;
use super::fixture::fixture;
use crate::kernel::btf::{Btf, BtfError, Kind, VMLINUX_PATH};

fn parsed() -> Btf {
    match Btf::from_bytes(fixture().build()) {
        Ok(btf) => btf,
        Err(e) => panic!("fixture does not parse: {e}"),
    }
}

#[test]
fn members_inside_anonymous_unions_and_structs() {
    let btf = parsed();
    let off = |m: &str| btf.member_offset("sk_buff", m).unwrap();
    assert_eq!(off("next"), 0);
    assert_eq!(off("dev"), 16);
    assert_eq!(off("sk"), 24);
    assert_eq!(off("len"), 112);
    assert_eq!(off("protocol"), 180);
    assert_eq!(off("network_header"), 184);
    assert_eq!(off("mac_header"), 186);
    assert_eq!(off("headers.mac_header"), 186);
    assert_eq!(off("head"), 200);
    assert_eq!(off("data"), 208);
    assert_eq!(btf.member_size("sk_buff", "len").unwrap(), 4);
    assert_eq!(btf.member_size("sk_buff", "protocol").unwrap(), 2);
    assert_eq!(btf.member_size("sk_buff", "dev").unwrap(), 8);
    assert_eq!(btf.member_size("net_device", "name").unwrap(), 16);
}

#[test]
fn dotted_paths_through_embedded_structs_and_typedefs() {
    let btf = parsed();
    assert_eq!(btf.member_offset("net_device", "ifindex").unwrap(), 16);
    assert_eq!(btf.member_offset("net_device", "nd_net.net").unwrap(), 160);
    assert_eq!(btf.member_offset("net", "ns.inum").unwrap(), 24);
    assert_eq!(btf.member_offset("ns_common", "inum").unwrap(), 16);
    assert_eq!(
        btf.member_offset("sock", "__sk_common.skc_net.net")
            .unwrap(),
        48
    );
    assert_eq!(btf.member_offset("possible_net_t", "net").unwrap(), 0);
}

#[test]
fn bitfields() {
    let btf = parsed();
    let b = btf.member("flags_test", "b").unwrap();
    assert_eq!((b.bit_offset, b.bitfield_bits, b.size), (1, 3, 1));
    assert!(matches!(
        btf.member_offset("flags_test", "b"),
        Err(BtfError::Bitfield { bit_offset: 1, .. })
    ));
    assert_eq!(btf.member_offset("flags_test", "c").unwrap(), 2);
    let pkt_type = btf.member("sk_buff", "pkt_type").unwrap();
    assert_eq!((pkt_type.bit_offset, pkt_type.bitfield_bits), (1024, 3));
    assert_eq!(btf.member("sk_buff", "ignore_df").unwrap().bit_offset, 1027);
    let legacy = btf.member("legacy_bits", "y").unwrap();
    assert_eq!((legacy.bit_offset, legacy.bitfield_bits), (34, 5));
    assert_eq!(btf.member_offset("legacy_bits", "x").unwrap(), 0);
}

#[test]
fn member_errors() {
    let btf = parsed();
    assert!(matches!(
        btf.member_offset("nope", "x"),
        Err(BtfError::TypeNotFound(_))
    ));
    assert!(matches!(
        btf.member_offset("sk_buff", "nope"),
        Err(BtfError::MemberNotFound { .. })
    ));
    assert!(matches!(
        btf.member_offset("sk_buff", ""),
        Err(BtfError::MemberNotFound { .. })
    ));
    assert!(matches!(
        btf.member_offset("sk_buff", "dev.ifindex"),
        Err(BtfError::NotComposite { .. })
    ));
    let msg = btf
        .member_offset("sk_buff", "nope")
        .unwrap_err()
        .to_string();
    assert_eq!(msg, "`sk_buff` has no member `nope`");
}

#[test]
fn enums() {
    let btf = parsed();
    let reasons = btf.enum_variants("skb_drop_reason").unwrap();
    assert_eq!(
        reasons[3],
        ("SKB_DROP_REASON_NETFILTER_DROP".to_owned(), 12)
    );
    assert_eq!(reasons[5].1, 0xffff_0000);
    assert_eq!(btf.enum_variants("sign_test").unwrap()[0].1, -1);
    let big = btf.enum_variants("big64").unwrap();
    assert_eq!(
        big,
        vec![("HUGE".to_owned(), 1 << 40), ("ALL".to_owned(), -1)]
    );
    assert!(matches!(
        btf.enum_variants("missing"),
        Err(BtfError::TypeNotFound(_))
    ));
}

#[test]
fn func_protos() {
    let btf = parsed();
    let params = btf
        .typedef_func_proto_params("btf_trace_kfree_skb")
        .unwrap();
    let expected = [
        "void *",
        "struct sk_buff *",
        "void *",
        "enum skb_drop_reason",
        "struct sock *",
    ];
    assert_eq!(params, expected);
    assert_eq!(btf.func_params("_printk").unwrap(), ["const char *", "..."]);
    assert_eq!(btf.func_params("nf_hook_slow").unwrap().len(), 4);
    assert!(btf.has_func("nf_hook_slow"));
    assert!(!btf.has_func("sk_skb_reason_drop"));
    assert!(!btf.has_func("sk_buff"));
    assert!(matches!(
        btf.typedef_func_proto_params("possible_net_t"),
        Err(BtfError::NotFuncProto(_))
    ));
}

#[test]
fn lookups_by_kind() {
    let btf = parsed();
    let skb = btf.find_type_id("sk_buff", Kind::Struct).unwrap();
    assert_eq!(btf.kind_of(skb).unwrap(), Kind::Struct);
    assert!(btf.find_type_id("sk_buff", Kind::Fwd).unwrap() < skb);
    assert_eq!(btf.type_size(skb).unwrap(), 232);
    let name = btf.member("net_device", "name").unwrap();
    assert_eq!(btf.type_name(name.type_id).unwrap(), "char[16]");
}

#[test]
fn big_endian_blobs_parse_the_same() {
    let btf = Btf::from_bytes(fixture().build_big_endian()).unwrap();
    assert_eq!(btf.member_offset("sk_buff", "mac_header").unwrap(), 186);
    assert_eq!(btf.enum_variants("big64").unwrap()[0].1, 1 << 40);
}

#[test]
fn split_btf_continues_ids_and_strings() {
    let base = parsed();
    let skb = base.find_type_id("sk_buff", Kind::Struct).unwrap();
    let uint = base.find_type_id("unsigned int", Kind::Int).unwrap();
    let mut m = BtfBuilder::new_split(&base);
    let skb_ptr = m.ptr(skb);
    m.struct_(
        "ovs_thing",
        16,
        &[("skb", skb_ptr, 0), ("reason", uint, 64)],
    );
    m.enum32(
        "ovs_drop_reason",
        false,
        &[
            ("__OVS_DROP_REASON", 3 << 16),
            ("OVS_DROP_LAST_ACTION", (3 << 16) + 1),
        ],
    );
    let proto = m.func_proto(0, &[("skb", skb_ptr)]);
    m.func("ovs_fn", proto);
    let module = Btf::from_split_bytes(m.build(), &base).unwrap();

    assert_eq!(module.local_type_ids().start, base.next_type_id());
    assert_eq!(module.local_type_ids().start, skb_ptr);
    assert_eq!(module.type_name(skb_ptr).unwrap(), "struct sk_buff *");
    assert_eq!(module.member_offset("ovs_thing", "reason").unwrap(), 8);
    assert_eq!(module.member_size("ovs_thing", "skb").unwrap(), 8);
    assert_eq!(module.member_offset("sk_buff", "head").unwrap(), 200);
    assert!(module.has_func("ovs_fn") && module.has_func("nf_hook_slow"));
    assert!(!base.has_func("ovs_fn"));
    assert_eq!(module.func_params("ovs_fn").unwrap(), ["struct sk_buff *"]);
    let enums = module.local_enums().unwrap();
    assert_eq!(enums.len(), 1);
    assert_eq!(enums[0].name, "ovs_drop_reason");
    assert_eq!(
        enums[0].variants[1],
        ("OVS_DROP_LAST_ACTION".to_owned(), 0x30001)
    );
}

#[test]
fn corrupt_input_is_rejected() {
    let good = fixture().build();
    let mut bad_magic = good.clone();
    bad_magic[0] = 0;
    assert!(matches!(
        Btf::from_bytes(bad_magic),
        Err(BtfError::Invalid(_))
    ));
    assert!(matches!(
        Btf::from_bytes(&good[..10]),
        Err(BtfError::Invalid(_))
    ));
    assert!(matches!(
        Btf::from_bytes(&good[..good.len() - 1]),
        Err(BtfError::Invalid(_))
    ));
    let mut bad_kind = good.clone();
    bad_kind[24 + 7] = 0x1f;
    assert!(matches!(
        Btf::from_bytes(bad_kind),
        Err(BtfError::Invalid(_))
    ));
    assert!(matches!(
        Btf::from_file("/nonexistent/btf"),
        Err(BtfError::Io { .. })
    ));
}

#[test]
fn missing_kernel_btf_message_names_the_config_option() {
    let err = BtfError::KernelBtfMissing {
        path: VMLINUX_PATH.into(),
    };
    assert!(err.to_string().contains("CONFIG_DEBUG_INFO_BTF"));
}

#[test]
fn real_vmlinux() {
    assert!(
        std::path::Path::new(VMLINUX_PATH).exists(),
        "real_vmlinux needs {VMLINUX_PATH} (a kernel with CONFIG_DEBUG_INFO_BTF)"
    );
    let start = std::time::Instant::now();
    let btf = Btf::vmlinux().unwrap();
    let parsed = start.elapsed();
    let head = btf.member_offset("sk_buff", "head").unwrap();
    let indexed = start.elapsed();
    eprintln!(
        "vmlinux: {} types, parse {parsed:?}, parse+index {indexed:?}",
        btf.next_type_id() - 1
    );
    for m in [
        "dev",
        "data",
        "sk",
        "network_header",
        "mac_header",
        "protocol",
        "len",
        "tail",
    ] {
        btf.member_offset("sk_buff", m).unwrap();
    }
    assert!(head > 0);
    btf.member_offset("net_device", "ifindex").unwrap();
    btf.member_offset("net_device", "nd_net.net").unwrap();
    btf.member_offset("ns_common", "inum").unwrap();
    btf.member_offset("net", "ns.inum").unwrap();
    btf.member_offset("sock", "__sk_common.skc_net.net")
        .unwrap();
    let reasons = btf.enum_variants("skb_drop_reason").unwrap();
    assert!(reasons
        .iter()
        .any(|(n, _)| n == "SKB_DROP_REASON_NETFILTER_DROP"));
    assert!(btf.has_func("nf_hook_slow"));
    let params = btf
        .typedef_func_proto_params("btf_trace_kfree_skb")
        .unwrap();
    assert_eq!(params[1], "struct sk_buff *");
}

/// Ids aya finds by name in `blob`, parsed as aya parses it.
fn aya_ids(blob: &[u8], names: &[(&str, Kind)]) -> Vec<Option<u32>> {
    let aya = aya::Btf::parse(blob, aya::Endianness::default()).unwrap();
    names
        .iter()
        .map(|&(name, kind)| {
            let kind = match kind {
                Kind::Func => aya_obj::btf::BtfKind::Func,
                _ => aya_obj::btf::BtfKind::Typedef,
            };
            aya.id_by_type_name_kind(name, kind).ok()
        })
        .collect()
}

const ATTACH: &[(&str, Kind)] = &[
    ("btf_trace_kfree_skb", Kind::Typedef),
    ("nf_hook_slow", Kind::Func),
    ("no_such_function", Kind::Func),
];

#[test]
fn id_stub_keeps_the_ids_aya_finds_in_the_whole_blob() {
    let blob = fixture().build();
    let btf = Btf::from_bytes(blob.clone()).unwrap();
    let stub = btf.id_stub(ATTACH).unwrap();
    let ids = aya_ids(&stub, ATTACH);
    assert_eq!(ids, aya_ids(&blob, ATTACH));
    assert!(ids[0].is_some() && ids[1].is_some() && ids[2].is_none());
    assert!(btf
        .id_stub(&[("sk_buff", Kind::Struct)])
        .is_err_and(|e| e.to_string().contains("member data")));
}

#[test]
fn id_stub_of_real_vmlinux_matches_aya() {
    let raw = std::fs::read(VMLINUX_PATH).unwrap();
    let btf = Btf::from_bytes(raw.clone()).unwrap();
    let stub = btf.id_stub(ATTACH).unwrap();
    assert!(stub.len() < raw.len() / 2);
    assert_eq!(aya_ids(&stub, ATTACH), aya_ids(&raw, ATTACH));
}
