//! Embeds the git commit the binary is built from (`s3swarm --version`, and the `commit`
//! label of `s3swarm_build_info`). `S3SWARM_GIT_COMMIT` wins when set, for builds without a
//! `.git` directory (a Docker build context); otherwise `git` is asked, and a build outside
//! any checkout says `unknown` rather than failing.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=S3SWARM_GIT_COMMIT");
    let given = std::env::var("S3SWARM_GIT_COMMIT")
        .ok()
        .filter(|s| !s.trim().is_empty());
    let commit = given.or_else(|| {
        // Build again when HEAD moves: a new commit on the branch, or another branch.
        if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
            // Only files that exist: cargo takes a missing one as changed on every build,
            // which rebuilt this crate every time (a fresh clone has no packed-refs).
            let mut watched = vec![format!("{dir}/HEAD"), format!("{dir}/packed-refs")];
            if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
                watched.push(format!("{dir}/{head_ref}"));
            }
            for path in watched {
                if std::path::Path::new(&path).exists() {
                    println!("cargo:rerun-if-changed={path}");
                }
            }
        }
        git(&["rev-parse", "--short=12", "HEAD"])
    });
    let commit = commit.unwrap_or_else(|| "unknown".into());
    // Only a hex id (or `unknown`) may become a metric label and a version string.
    let commit = if commit
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        commit
    } else {
        "unknown".into()
    };
    println!("cargo:rustc-env=S3SWARM_GIT_COMMIT={commit}");
}
