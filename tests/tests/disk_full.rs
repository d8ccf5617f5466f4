//! A full disk: uploads answer 507 InsufficientStorage (not a 500 that SDKs retry), nothing
//! partial is visible, `/readyz` says why, deletes still work, and writes resume by themselves
//! once space is freed. The data directory is a 64 MiB tmpfs mounted by the test (as root).
//! And a disk that turns read-only under the node (an ext4 image on a loop device, failed by
//! the kernel's own error path): writes answer 503 with the cause, reads go on.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use s3swarm_tests::{Node, code, pseudo_random, until};

/// A tmpfs of `mib` MiB mounted on a fresh directory, unmounted when dropped (before the
/// directory holding it is removed).
struct Tmpfs {
    mnt: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(mib: u64) -> Tmpfs {
        let (dir, mnt) = mount_point("s3swarm-full-");
        let size = format!("size={mib}m");
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &size,
                "tmpfs",
                mnt.to_str().expect("utf-8 path"),
            ],
        );
        Tmpfs { mnt, _dir: dir }
    }

    fn path(&self) -> &Path {
        &self.mnt
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
    }
}

async fn readyz(node: &Node) -> (u16, String) {
    let r = reqwest::get(format!("{}/readyz", node.endpoint))
        .await
        .expect("readyz");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

#[tokio::test]
async fn a_full_disk_refuses_uploads_with_507_keeps_deletes_working_and_recovers_by_itself() {
    let fs = Tmpfs::mount(64);
    let node = Node::start_on(
        &fs.path().join("data"),
        &["--gc-grace-secs", "0", "--disk-reserve-bytes", "8388608"],
    );
    // Retries off: a retried 5xx must not pass for success.
    let s3 = node.client_once(
        s3swarm_tests::ACCESS_KEY,
        s3swarm_tests::SECRET_KEY,
        Duration::from_secs(30),
    );
    s3.create_bucket().bucket("full").send().await.unwrap();

    // Fill it with 4 MiB objects until an upload is refused.
    let mut stored = Vec::new();
    let refused = loop {
        let i = stored.len();
        assert!(i < 40, "64 MiB cannot hold {i} objects of 4 MiB");
        let body = pseudo_random(4 << 20, i as u64);
        match s3
            .put_object()
            .bucket("full")
            .key(format!("obj-{i}"))
            .body(body.into())
            .send()
            .await
        {
            Ok(_) => stored.push(format!("obj-{i}")),
            Err(e) => break (format!("obj-{i}"), e),
        }
    };
    let (refused_key, err) = refused;
    assert_eq!(code(&err), "InsufficientStorage", "{err:?}");
    let status = err.raw_response().map(|r| r.status().as_u16());
    assert_eq!(status, Some(507));
    assert!(stored.len() >= 8, "only {} objects fit", stored.len());

    // Nothing partial: the refused key does not exist; every stored one reads back whole.
    let head = s3
        .head_object()
        .bucket("full")
        .key(&refused_key)
        .send()
        .await;
    assert!(head.is_err(), "{refused_key} must not exist");
    let (st, body) = readyz(&node).await;
    assert_eq!(st, 503, "{body}");
    assert!(body.contains("disk is full"), "{body}");
    assert_eq!(node.metric("s3swarm_store_disk_full").await, 1.0);
    // Fill the rest with 256 KiB objects until they are refused too: each refusal is a 507.
    let mut small = 0;
    loop {
        assert!(small < 64, "the disk never filled");
        let r = s3
            .put_object()
            .bucket("full")
            .key(format!("small-{small}"))
            .body(pseudo_random(256 << 10, 1000 + small).into())
            .send()
            .await;
        match r {
            Ok(_) => stored.push(format!("small-{small}")),
            Err(e) => {
                assert_eq!(code(&e), "InsufficientStorage", "{e:?}");
                break;
            }
        }
        small += 1;
    }

    let listed = s3
        .list_objects_v2()
        .bucket("full")
        .send()
        .await
        .unwrap()
        .key_count()
        .unwrap_or(0);
    assert_eq!(listed as usize, stored.len());

    // Deleting works on the full node, frees the space, and writes resume by themselves.
    for k in stored.iter().take(6) {
        s3.delete_object()
            .bucket("full")
            .key(k)
            .send()
            .await
            .unwrap_or_else(|e| panic!("delete {k} on a full disk: {e:?}"));
    }
    until("readiness after space was freed", 30, || async {
        readyz(&node).await.0 == 200
    })
    .await;
    assert_eq!(node.metric("s3swarm_store_disk_full").await, 0.0);
    let again = pseudo_random(4 << 20, 999);
    s3.put_object()
        .bucket("full")
        .key(&refused_key)
        .body(again.clone().into())
        .send()
        .await
        .expect("writes resume once space is freed");
    let got = s3_get(&s3, &refused_key).await;
    assert!(got == again, "the resumed write reads back whole");
}

async fn s3_get(s3: &aws_sdk_s3::Client, key: &str) -> Vec<u8> {
    let o = s3
        .get_object()
        .bucket("full")
        .key(key)
        .send()
        .await
        .expect("get");
    o.body.collect().await.expect("body").into_bytes().to_vec()
}

/// With no reserve (`--disk-reserve-bytes 0`) the disk really fills, pack writes and RocksDB's
/// own log hit ENOSPC: still 507 and nothing partial; once the operator frees space outside
/// s3swarm (here: an 80 MiB ballast file the test put there first), RocksDB resumes by itself
/// (it waits for its 64 MiB write buffer to be free) and so do writes.
#[tokio::test]
async fn a_disk_filled_to_the_last_byte_answers_507_and_recovers_when_space_is_freed_outside() {
    let fs = Tmpfs::mount(112);
    let ballast = fs.path().join("ballast");
    std::fs::write(&ballast, vec![0u8; 80 << 20]).expect("ballast");
    let node = Node::start_on(
        &fs.path().join("data"),
        &["--gc-grace-secs", "0", "--disk-reserve-bytes", "0"],
    );
    let s3 = node.client_once(
        s3swarm_tests::ACCESS_KEY,
        s3swarm_tests::SECRET_KEY,
        Duration::from_secs(30),
    );
    s3.create_bucket().bucket("brim").send().await.unwrap();
    // 1 MiB objects, then 4 KiB ones (kept in RocksDB), until both are refused.
    let mut stored = 0u64;
    for size in [1 << 20, 4 << 10] {
        loop {
            assert!(stored < 20_000, "the disk never filled");
            let r = s3
                .put_object()
                .bucket("brim")
                .key(format!("o-{stored}"))
                .body(pseudo_random(size, stored).into())
                .send()
                .await;
            match r {
                Ok(_) => stored += 1,
                Err(e) => {
                    assert_eq!(code(&e), "InsufficientStorage", "{e:?}");
                    break;
                }
            }
        }
    }
    assert_eq!(readyz(&node).await.0, 503);
    // Every stored object is listed and the refused ones are not.
    let mut listed = 0;
    let mut token = None;
    loop {
        let page = s3
            .list_objects_v2()
            .bucket("brim")
            .set_continuation_token(token)
            .send()
            .await
            .unwrap();
        listed += page.key_count().unwrap_or(0) as u64;
        token = page.next_continuation_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(listed, stored);

    std::fs::remove_file(&ballast).expect("free the ballast");
    until("readiness after the ballast was removed", 60, || async {
        readyz(&node).await.0 == 200
    })
    .await;
    s3.put_object()
        .bucket("brim")
        .key("after")
        .body(pseudo_random(1 << 20, 77).into())
        .send()
        .await
        .expect("writes resume once space is freed");
}

/// An ext4 file system on a loop device, mounted with `errors=remount-ro` on a fresh directory:
/// the kernel can be made to find an error on it (`trigger_fs_error`), after which it is
/// read-only under the running node, open files and all, as a failing disk leaves it.
struct FailingDisk {
    img: PathBuf,
    mnt: PathBuf,
    _dir: tempfile::TempDir,
}

impl FailingDisk {
    fn create(mib: u64) -> FailingDisk {
        let (dir, mnt) = mount_point("s3swarm-ro-");
        let img = dir.path().join("disk.img");
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(mib << 20))
            .expect("image");
        run(
            "mkfs.ext4",
            &["-q", "-F", img.to_str().expect("utf-8 path")],
        );
        let disk = FailingDisk {
            img,
            mnt,
            _dir: dir,
        };
        disk.mount();
        disk
    }

    fn mount(&self) {
        run(
            "mount",
            &[
                "-o",
                "loop,errors=remount-ro",
                self.img.to_str().expect("utf-8 path"),
                self.mnt.to_str().expect("utf-8 path"),
            ],
        );
    }

    /// The kernel's own error handling, as a bad block or a failed journal write starts it.
    fn fail(&self) {
        let out = Command::new("findmnt")
            .args(["-n", "-o", "SOURCE"])
            .arg(&self.mnt)
            .output()
            .expect("findmnt");
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let name = dev.rsplit('/').next().expect("a device name");
        std::fs::write(
            format!("/sys/fs/ext4/{name}/trigger_fs_error"),
            "s3swarm test\n",
        )
        .expect("trigger an ext4 error");
    }

    /// Unmounted, repaired by fsck and mounted again, as an operator brings a disk back.
    fn repair(&self) {
        run("umount", &[self.mnt.to_str().expect("utf-8 path")]);
        // e2fsck exits 1 when it fixed something, which is expected here.
        let st = Command::new("e2fsck")
            .args(["-f", "-y"])
            .arg(&self.img)
            .output()
            .expect("e2fsck");
        assert!(
            matches!(st.status.code(), Some(0 | 1)),
            "e2fsck: {}",
            String::from_utf8_lossy(&st.stdout)
        );
        self.mount();
    }
}

impl Drop for FailingDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
    }
}

/// An SDK error's code, HTTP status and message.
fn summary<E: aws_sdk_s3::error::ProvideErrorMetadata + std::fmt::Debug>(
    e: &aws_sdk_s3::error::SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> (String, Option<u16>, String) {
    let msg = e
        .as_service_error()
        .and_then(|s| s.message())
        .map_or_else(|| format!("{e:?}"), str::to_owned);
    (code(e), e.raw_response().map(|r| r.status().as_u16()), msg)
}

/// A fresh temporary directory and an empty `mnt` inside it to mount on.
fn mount_point(prefix: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temp dir");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mount point");
    (dir, mnt)
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} (this test needs root and loop devices): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The disk under RocksDB and the packs turns read-only while the node runs (the kernel found
/// an error on it). Tried: a PUT whose bytes are new (the pack append fails first), a small
/// PUT and a DELETE (the metadata commit fails in RocksDB's log): each answers 503 naming the
/// cause, nothing stored or removed; reads keep working; `/readyz` says writes are failing;
/// the node stops when asked. Once the disk is repaired and the node restarted, what was
/// stored before is whole and writes land again.
#[tokio::test]
async fn a_disk_gone_read_only_answers_503_for_writes_keeps_reads_and_says_why() {
    let disk = FailingDisk::create(300);
    let dir = disk.mnt.join("data");
    let mut node = Node::start_on(&dir, &["--scrub-rate", "0"]);
    let s3 = node.client_once(
        s3swarm_tests::ACCESS_KEY,
        s3swarm_tests::SECRET_KEY,
        Duration::from_secs(30),
    );
    s3.create_bucket().bucket("full").send().await.unwrap();
    let before = pseudo_random(3 << 20, 1);
    s3.put_object()
        .bucket("full")
        .key("before")
        .body(before.clone().into())
        .send()
        .await
        .unwrap();

    disk.fail();
    node.expect_server_errors();
    let big = s3
        .put_object()
        .bucket("full")
        .key("during")
        .body(pseudo_random(3 << 20, 2).into())
        .send()
        .await
        .unwrap_err();
    let small = s3
        .put_object()
        .bucket("full")
        .key("during-small")
        .body(b"tiny".to_vec().into())
        .send()
        .await
        .unwrap_err();
    let delete = s3
        .delete_object()
        .bucket("full")
        .key("before")
        .send()
        .await
        .unwrap_err();
    let answers = [
        ("big PUT", summary(&big)),
        ("small PUT", summary(&small)),
        ("DELETE", summary(&delete)),
    ];
    for (what, (code, status, msg)) in answers {
        assert_eq!(code, "ServiceUnavailable", "{what}: {msg}");
        assert_eq!(status, Some(503), "{what}");
        assert!(
            msg.contains("Read-only file system") || msg.contains("read-only"),
            "{what}: the answer does not say why: {msg}"
        );
    }
    assert_eq!(
        s3_get(&s3, "before").await,
        before,
        "reads stop with writes"
    );
    let (st, body) = readyz(&node).await;
    assert_eq!(st, 503, "{body}");
    assert!(body.contains("writes are failing"), "{body}");
    assert!(
        node.stop(30).is_some(),
        "the node did not stop within 30 s of SIGTERM"
    );

    disk.repair();
    let node = Node::start_on(&dir, &["--scrub-rate", "0"]);
    let s3 = node.client_once(
        s3swarm_tests::ACCESS_KEY,
        s3swarm_tests::SECRET_KEY,
        Duration::from_secs(30),
    );
    assert_eq!(s3_get(&s3, "before").await, before);
    for key in ["during", "during-small"] {
        let missing = s3
            .head_object()
            .bucket("full")
            .key(key)
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&missing), "NotFound", "{key}");
    }
    s3.put_object()
        .bucket("full")
        .key("after")
        .body(b"again".to_vec().into())
        .send()
        .await
        .unwrap();
    let (st, body) = readyz(&node).await;
    assert_eq!(st, 200, "{body}");
}
