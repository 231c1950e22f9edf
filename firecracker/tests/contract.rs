//! The contract test: every request the client can produce, with every optional field set,
//! names a route of the official API definition and validates against its body definition.
//! A misspelt field, a wrong type, a body sent to the wrong path: each fails here.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

use std::collections::BTreeMap;

use banger_firecracker::calls::{self, ApiCall};
use banger_firecracker::models::{
    BootSource, CacheType, CpuTemplate, Drive, HugePages, IoEngine, LogLevel, Logger,
    MachineConfiguration, MemoryBackend, MemoryBackendType, Metrics, NetworkInterface,
    NetworkOverride, RateLimiter, SnapshotCreateParams, SnapshotHugePages, SnapshotLoadParams,
    SnapshotType, TokenBucket, Vsock, VsockOverride,
};
use banger_firecracker::schema::ApiSchema;
use serde_json::json;

fn limiter() -> RateLimiter {
    let bucket = TokenBucket {
        size: 1_048_576,
        refill_time: 100,
        one_time_burst: Some(4096),
    };
    RateLimiter {
        bandwidth: Some(bucket.clone()),
        ops: Some(bucket),
    }
}

/// Every call the client makes, each body with every optional field set.
fn every_call_fully_populated() -> Vec<ApiCall> {
    vec![
        calls::put_machine_config(&MachineConfiguration {
            vcpu_count: 2,
            mem_size_mib: 1024,
            smt: Some(false),
            track_dirty_pages: Some(true),
            cpu_template: Some(CpuTemplate::None),
            huge_pages: Some(HugePages::Hugetlbfs2M),
        })
        .unwrap(),
        calls::put_boot_source(&BootSource {
            kernel_image_path: "/images/debian/vmlinux".into(),
            boot_args: Some(
                "console=ttyS0 reboot=k ip=172.16.0.2::172.16.0.1:255.255.255.0:web:eth0:off"
                    .into(),
            ),
            initrd_path: Some("/images/debian/initrd".into()),
        })
        .unwrap(),
        calls::put_drive(&Drive {
            drive_id: "rootfs".into(),
            is_root_device: true,
            path_on_host: Some("/vms/web/root.ext4".into()),
            is_read_only: Some(false),
            partuuid: Some("0eaa91a0-01".into()),
            cache_type: Some(CacheType::Writeback),
            io_engine: Some(IoEngine::Async),
            rate_limiter: Some(limiter()),
            socket: Some("/run/vhost-user-blk.sock".into()),
        })
        .unwrap(),
        calls::put_network_interface(&NetworkInterface {
            iface_id: "eth0".into(),
            host_dev_name: "tap-web".into(),
            guest_mac: Some("06:00:ac:10:00:02".into()),
            mtu: Some(1500),
            rx_rate_limiter: Some(limiter()),
            tx_rate_limiter: Some(limiter()),
        })
        .unwrap(),
        calls::put_vsock(&Vsock {
            guest_cid: 3,
            uds_path: "/run/banger/vms/web/vsock.sock".into(),
            vsock_id: Some("vsock0".into()),
        })
        .unwrap(),
        calls::put_logger(&Logger {
            level: Some(LogLevel::Debug),
            log_path: Some("/run/banger/vms/web/fc.log".into()),
            show_level: Some(true),
            show_log_origin: Some(true),
            module: Some("api_server::request".into()),
        })
        .unwrap(),
        calls::put_metrics(&Metrics {
            metrics_path: "/run/banger/vms/web/metrics.fifo".into(),
            emit_id: Some(true),
            properties: Some(BTreeMap::from([("host".to_owned(), "lab1".to_owned())])),
        })
        .unwrap(),
        calls::instance_start().unwrap(),
        calls::send_ctrl_alt_del().unwrap(),
        calls::flush_metrics().unwrap(),
        calls::pause().unwrap(),
        calls::resume().unwrap(),
        calls::create_snapshot(&SnapshotCreateParams {
            mem_file_path: "/snap/mem".into(),
            snapshot_path: "/snap/vmstate".into(),
            snapshot_type: Some(SnapshotType::Diff),
        })
        .unwrap(),
        calls::load_snapshot(&SnapshotLoadParams {
            snapshot_path: "/snap/vmstate".into(),
            mem_file_path: Some("/snap/mem".into()),
            mem_backend: Some(MemoryBackend {
                backend_type: MemoryBackendType::File,
                backend_path: "/snap/mem".into(),
            }),
            enable_diff_snapshots: Some(false),
            track_dirty_pages: Some(true),
            resume_vm: Some(true),
            network_overrides: Some(vec![NetworkOverride {
                iface_id: "eth0".into(),
                host_dev_name: "tap-web2".into(),
            }]),
            vsock_override: Some(VsockOverride {
                uds_path: "/run/banger/vms/web2/vsock.sock".into(),
            }),
            clock_realtime: Some(true),
            huge_pages: Some(SnapshotHugePages::Transparent),
        })
        .unwrap(),
        calls::describe_instance(),
        calls::version(),
        calls::get_machine_config(),
    ]
}

#[test]
fn every_client_request_matches_a_route_and_validates_against_its_definition() {
    let schema = ApiSchema::firecracker().unwrap();
    let all = every_call_fully_populated();
    assert_eq!(
        all.len(),
        17,
        "a call was added or removed: update this list"
    );
    for call in all {
        let (route, _) = schema.route(call.method, &call.path).unwrap_or_else(|| {
            panic!(
                "{}: {} {} is not in the api definition",
                call.name, call.method, call.path
            )
        });
        assert_eq!(
            route.body.as_deref(),
            call.definition,
            "{}: the definition names a different body for {route}",
            call.name
        );
        match (&call.body, call.definition) {
            (Some(body), Some(def)) => {
                schema
                    .validate(def, body)
                    .unwrap_or_else(|e| panic!("{}: body {body} violates {def}: {e}", call.name));
                let missing = schema.missing_properties(def, body);
                assert!(
                    missing.is_empty(),
                    "{}: the fully populated {def} body lacks {missing:?} (a field the model \
                     does not have, or a misspelt one)",
                    call.name
                );
            }
            (None, None) => assert!(!route.body_required, "{}: {route} needs a body", call.name),
            _ => panic!("{}: body and definition disagree", call.name),
        }
    }
}

#[test]
fn minimal_bodies_from_the_constructors_validate_too() {
    let schema = ApiSchema::firecracker().unwrap();
    for call in [
        calls::put_machine_config(&MachineConfiguration::new(1, 128)).unwrap(),
        calls::put_drive(&Drive::new("work", "/vms/web/work.ext4", false, false)).unwrap(),
        calls::put_network_interface(&NetworkInterface::new("eth0", "tap0", "06:00:00:00:00:01"))
            .unwrap(),
        calls::put_vsock(&Vsock::new(3, "/v.sock")).unwrap(),
        calls::load_snapshot(&SnapshotLoadParams::from_file("/s", "/m", false)).unwrap(),
    ] {
        let def = call.definition.unwrap();
        schema
            .validate(def, call.body.as_ref().unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", call.name));
    }
}

#[test]
fn a_body_with_a_misspelt_field_is_rejected() {
    let schema = ApiSchema::firecracker().unwrap();
    // What a typo in a serde rename would produce.
    let typo = json!({
        "drive_id": "rootfs",
        "is_root_device": true,
        "path_on_host": "/r.ext4",
        "is_readonly": false
    });
    let err = schema.validate("Drive", &typo).unwrap_err();
    assert!(err.message.contains("unknown field `is_readonly`"), "{err}");
    // And a missing required field.
    let err = schema
        .validate(
            "NetworkInterface",
            &json!({"iface_id": "eth0", "host_devname": "tap0"}),
        )
        .unwrap_err();
    assert!(err.message.contains("host_dev_name"), "{err}");
}

#[test]
fn models_parse_back_what_they_send_and_deny_unknown_fields() {
    let drive = Drive::new("rootfs", "/r.ext4", true, false);
    let text = serde_json::to_string(&drive).unwrap();
    assert_eq!(serde_json::from_str::<Drive>(&text).unwrap(), drive);
    assert!(
        serde_json::from_str::<Drive>(r#"{"drive_id":"a","is_root_device":true,"x":1}"#).is_err()
    );
    let info: banger_firecracker::models::InstanceInfo = serde_json::from_value(json!({
        "app_name": "Firecracker", "id": "web", "state": "Not started",
        "vmm_version": "1.7.0", "extra": "a newer firecracker may add fields"
    }))
    .unwrap();
    assert_eq!(
        info.state,
        banger_firecracker::models::InstanceState::NotStarted
    );
}

/// Every variant of every enum the models carry, in a body of its definition: a wrong
/// `rename` on a variant the fully populated bodies above do not use fails here.
#[test]
fn every_enum_variant_validates_in_its_definition() {
    use banger_firecracker::models::{
        ActionType, InstanceActionInfo, SnapshotLoadParams, Vm, VmState,
    };
    let schema = ApiSchema::firecracker().unwrap();
    let check = |def: &str, body: serde_json::Value| {
        schema
            .validate(def, &body)
            .unwrap_or_else(|e| panic!("{def}: {body} violates it: {e}"));
    };
    let mc = |f: &dyn Fn(&mut MachineConfiguration)| {
        let mut m = MachineConfiguration::new(2, 256);
        f(&mut m);
        serde_json::to_value(m).unwrap()
    };
    for t in [
        CpuTemplate::C3,
        CpuTemplate::T2,
        CpuTemplate::T2S,
        CpuTemplate::T2CL,
        CpuTemplate::T2A,
        CpuTemplate::V1N1,
        CpuTemplate::None,
    ] {
        check("MachineConfiguration", mc(&|m| m.cpu_template = Some(t)));
    }
    for h in [
        HugePages::None,
        HugePages::Transparent,
        HugePages::Hugetlbfs2M,
    ] {
        check("MachineConfiguration", mc(&|m| m.huge_pages = Some(h)));
    }
    for (c, e) in [
        (CacheType::Unsafe, IoEngine::Sync),
        (CacheType::Writeback, IoEngine::Async),
    ] {
        let mut d = Drive::new("rootfs", "/r", true, false);
        d.cache_type = Some(c);
        d.io_engine = Some(e);
        check("Drive", serde_json::to_value(d).unwrap());
    }
    for level in [
        LogLevel::Error,
        LogLevel::Warning,
        LogLevel::Info,
        LogLevel::Debug,
        LogLevel::Trace,
        LogLevel::Off,
    ] {
        let l = Logger {
            level: Some(level),
            log_path: None,
            show_level: None,
            show_log_origin: None,
            module: None,
        };
        check("Logger", serde_json::to_value(l).unwrap());
    }
    for t in [SnapshotType::Full, SnapshotType::Diff] {
        let s = SnapshotCreateParams {
            mem_file_path: "/m".into(),
            snapshot_path: "/s".into(),
            snapshot_type: Some(t),
        };
        check("SnapshotCreateParams", serde_json::to_value(s).unwrap());
    }
    for (b, h) in [
        (MemoryBackendType::File, SnapshotHugePages::Snapshot),
        (MemoryBackendType::Uffd, SnapshotHugePages::None),
        (MemoryBackendType::File, SnapshotHugePages::Transparent),
        (MemoryBackendType::File, SnapshotHugePages::Hugetlbfs2M),
    ] {
        let mut s = SnapshotLoadParams::from_file("/s", "/m", true);
        if let Some(m) = s.mem_backend.as_mut() {
            m.backend_type = b;
        }
        s.huge_pages = Some(h);
        check("SnapshotLoadParams", serde_json::to_value(s).unwrap());
    }
    for a in [
        ActionType::FlushMetrics,
        ActionType::InstanceStart,
        ActionType::SendCtrlAltDel,
    ] {
        check(
            "InstanceActionInfo",
            serde_json::to_value(InstanceActionInfo { action_type: a }).unwrap(),
        );
    }
    for s in [VmState::Paused, VmState::Resumed] {
        check("Vm", serde_json::to_value(Vm { state: s }).unwrap());
    }
}

/// The reply models (what the client decodes and the simulator sends) match their
/// definitions too, every state included.
#[test]
fn reply_models_match_their_definitions() {
    use banger_firecracker::models::{
        ApiErrorBody, FirecrackerVersion, InstanceInfo, InstanceState,
    };
    let schema = ApiSchema::firecracker().unwrap();
    for state in [
        InstanceState::NotStarted,
        InstanceState::Running,
        InstanceState::Paused,
    ] {
        let info = InstanceInfo {
            app_name: "Firecracker".into(),
            id: "web".into(),
            state,
            vmm_version: "1.12.0".into(),
        };
        let v = serde_json::to_value(&info).unwrap();
        schema
            .validate("InstanceInfo", &v)
            .unwrap_or_else(|e| panic!("{v}: {e}"));
        assert!(schema.missing_properties("InstanceInfo", &v).is_empty());
    }
    let v = serde_json::to_value(FirecrackerVersion {
        firecracker_version: "1.12.0".into(),
    })
    .unwrap();
    schema.validate("FirecrackerVersion", &v).unwrap();
    let v = serde_json::to_value(ApiErrorBody {
        fault_message: "x".into(),
    })
    .unwrap();
    schema.validate("Error", &v).unwrap();
    let v = serde_json::to_value(MachineConfiguration::new(1, 128)).unwrap();
    schema.validate("MachineConfiguration", &v).unwrap();
}
