//! The image registry over the bus: register, list, show, remove; bad input refused with a
//! clear error and nothing persisted; removal refused while a VM uses the image.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

mod common;

use banger_proto::op::store;
use banger_proto::store::{
    ImageInfo, ImageListReply, ImageListRequest, ImageRefRequest, ImageRemoveReply,
    RegisterImageRequest, VolumeCreateRequest, VolumeDeleteReply, VolumeDeleteRequest, VolumeSet,
};
use banger_proto::{ErrorCode, ImageName, MemMib};
use common::{Stack, make_image, vm_id};

fn register_req(name: &str, kernel: &str, rootfs: &str) -> RegisterImageRequest {
    RegisterImageRequest {
        name: ImageName::new(name).unwrap(),
        kernel: kernel.to_owned(),
        initrd: None,
        rootfs: rootfs.to_owned(),
        kernel_args: None,
        default_disk_mib: None,
    }
}

async fn names(s: &Stack) -> Vec<String> {
    let r: ImageListReply = s
        .req::<store::ImageList>(&ImageListRequest {})
        .await
        .unwrap();
    r.images.iter().map(|i| i.name.to_string()).collect()
}

#[tokio::test]
async fn register_list_show_remove_round_trip() {
    let s = Stack::start("backend = 'sparse'\ndefault_disk_mib = 64").await;
    let files = make_image(&s.dir.path().join("images"), 32);
    // A path with `..` and a symlink is stored canonical.
    let link = s.dir.path().join("link-to-rootfs");
    std::os::unix::fs::symlink(&files.rootfs, &link).unwrap();
    let twisty_kernel = format!("{}/../images/vmlinux", files.dir.display());
    let mut req = register_req("debian", &twisty_kernel, link.to_str().unwrap());
    req.kernel_args = Some("console=ttyS0 quiet".into());
    let info: ImageInfo = s.req::<store::ImageRegister>(&req).await.unwrap();
    let canon = |p: &std::path::Path| std::fs::canonicalize(p).unwrap().display().to_string();
    assert_eq!(info.kernel, canon(&files.kernel));
    assert_eq!(info.rootfs, canon(&files.rootfs));
    assert_eq!(info.kernel_args, "console=ttyS0 quiet");
    assert_eq!(
        info.default_disk_mib.get(),
        64,
        "the [stord] default applies"
    );
    assert_eq!(info.rootfs_bytes, 32 << 20);

    let second = register_req(
        "void",
        files.kernel.to_str().unwrap(),
        files.rootfs.to_str().unwrap(),
    );
    let void: ImageInfo = s.req::<store::ImageRegister>(&second).await.unwrap();
    assert!(
        void.kernel_args.contains("console=ttyS0"),
        "stord's default kernel args"
    );
    assert_eq!(names(&s).await, vec!["debian", "void"]);

    let shown: ImageInfo = s
        .req::<store::ImageShow>(&ImageRefRequest {
            name: info.name.clone(),
        })
        .await
        .unwrap();
    assert_eq!(shown, info);

    // The registry survives a restart.
    let mut s = s;
    s.restart_stord().await;
    assert_eq!(names(&s).await, vec!["debian", "void"]);

    let removed: ImageRemoveReply = s
        .req::<store::ImageRemove>(&ImageRefRequest {
            name: info.name.clone(),
        })
        .await
        .unwrap();
    assert_eq!(removed.name, info.name);
    assert_eq!(names(&s).await, vec!["void"]);
    assert!(
        files.rootfs.exists(),
        "the operator's files are never deleted"
    );

    let err = s
        .req::<store::ImageShow>(&ImageRefRequest {
            name: info.name.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound, "{err}");
    let err = s
        .req::<store::ImageRemove>(&ImageRefRequest { name: info.name })
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound, "{err}");
}

#[tokio::test]
async fn bad_registrations_are_refused_and_nothing_is_persisted() {
    let s = Stack::start("backend = 'sparse'").await;
    let files = make_image(&s.dir.path().join("images"), 16);
    let kernel = files.kernel.to_str().unwrap().to_owned();
    let rootfs = files.rootfs.to_str().unwrap().to_owned();
    let ok: ImageInfo = s
        .req::<store::ImageRegister>(&register_req("base", &kernel, &rootfs))
        .await
        .unwrap();

    // A file inside stord's own state directory (its registry) must never be registered.
    let registry = s.stord_dir().join("stord.db");
    let missing = files.dir.join("missing.ext4");
    let dir = files.dir.display().to_string();
    let cases: Vec<(RegisterImageRequest, ErrorCode, &str)> = vec![
        (
            register_req("rel", "images/vmlinux", &rootfs),
            ErrorCode::InvalidArgument,
            "must be absolute",
        ),
        (
            register_req("dir", &kernel, &dir),
            ErrorCode::InvalidArgument,
            "is not a regular file (it is a directory)",
        ),
        (
            register_req("missing", &kernel, missing.to_str().unwrap()),
            ErrorCode::NotFound,
            "cannot be found",
        ),
        (
            register_req("notext4", &kernel, &kernel),
            ErrorCode::InvalidArgument,
            "not an ext4 image",
        ),
        (
            register_req("inside", registry.to_str().unwrap(), &rootfs),
            ErrorCode::InvalidArgument,
            "inside stord's state directory",
        ),
        (
            register_req("devnull", "/dev/null", &rootfs),
            ErrorCode::InvalidArgument,
            "character device",
        ),
        (
            register_req("base", &kernel, &rootfs),
            ErrorCode::Conflict,
            "already registered",
        ),
        (
            RegisterImageRequest {
                kernel_args: Some("console=ttyS0\ninit=/bin/sh".into()),
                ..register_req("badargs", &kernel, &rootfs)
            },
            ErrorCode::InvalidArgument,
            "control characters",
        ),
        (
            RegisterImageRequest {
                initrd: Some(dir.clone()),
                ..register_req("badinitrd", &kernel, &rootfs)
            },
            ErrorCode::InvalidArgument,
            "initrd",
        ),
    ];
    for (req, code, msg) in cases {
        let name = req.name.to_string();
        let err = s.req::<store::ImageRegister>(&req).await.unwrap_err();
        assert_eq!(err.code, code, "{name}: {err}");
        assert!(err.message.contains(msg), "{name}: {err}");
    }

    // Names are checked before anything else: raw JSON with names the typed client refuses.
    for bad in ["", "../etc", "a/b", "UPPER", "-x", &"x".repeat(64)] {
        let body = serde_json::json!({ "name": bad, "kernel": kernel, "rootfs": rootfs });
        let err = s.raw::<store::ImageRegister>(&body).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument, "{bad:?}: {err}");
        assert!(err.message.contains("image name"), "{bad:?}: {err}");
    }
    let unknown =
        serde_json::json!({ "name": "x", "kernel": kernel, "rootfs": rootfs, "rm": true });
    let err = s.raw::<store::ImageRegister>(&unknown).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument, "{err}");

    // Nothing but the good image was recorded, and it is unchanged.
    let r: ImageListReply = s
        .req::<store::ImageList>(&ImageListRequest {})
        .await
        .unwrap();
    assert_eq!(r.images, vec![ok]);
}

#[tokio::test]
async fn an_image_in_use_cannot_be_removed() {
    let s = Stack::start("backend = 'sparse'").await;
    let files = make_image(&s.dir.path().join("images"), 16);
    let _: ImageInfo = s
        .req::<store::ImageRegister>(&register_req(
            "base",
            files.kernel.to_str().unwrap(),
            files.rootfs.to_str().unwrap(),
        ))
        .await
        .unwrap();
    let vm = vm_id();
    let _: VolumeSet = s
        .req::<store::VolumeCreate>(&VolumeCreateRequest {
            vm_id: vm.clone(),
            image: ImageName::new("base").unwrap(),
            disk_mib: Some(MemMib::new(16).unwrap()),
        })
        .await
        .unwrap();
    let name = ImageName::new("base").unwrap();
    let err = s
        .req::<store::ImageRemove>(&ImageRefRequest { name: name.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Conflict, "{err}");
    assert!(err.message.contains(vm.short()), "names the VM: {err}");
    assert_eq!(names(&s).await, vec!["base"]);

    let d: VolumeDeleteReply = s
        .req::<store::VolumeDelete>(&VolumeDeleteRequest { vm_id: vm })
        .await
        .unwrap();
    assert!(d.removed);
    let _: ImageRemoveReply = s
        .req::<store::ImageRemove>(&ImageRefRequest { name })
        .await
        .unwrap();
    assert!(names(&s).await.is_empty());
}
