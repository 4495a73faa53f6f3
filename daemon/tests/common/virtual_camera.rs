//! A libcamera camera for machines without one: libcamera's own virtual pipeline handler, which
//! sends a configured image as a camera's frames through the real libcamera and GStreamer's real
//! libcamerasrc.
//!
//! Debian 12's libcamera (0.0.3) has no virtual pipeline handler, so `lookout` runs in a Debian 13
//! root (libcamera and libcamerasrc from trixie-backports, made once with `mmdebstrap` and kept
//! under Cargo's target directory) through `unshare --mount` and `chroot`. The test's directory,
//! the model and the binary's directory are bind-mounted at the same paths, so configs need no
//! rewriting; the network is the host's, so the test's mosquitto is reachable. `libcamera_virtual.c`
//! supplies what the virtual handler needs from the kernel and paces it like a sensor.
//!
//! Needs root (mount namespaces, chroot, a real-time camera thread).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{build_preload, require};

/// Where libcamera reads its virtual cameras from, inside the root.
const VIRTUAL_CONFIG_DIR: &str = "usr/share/libcamera/pipeline/virtual";

/// The Debian 13 root with libcamera's virtual pipeline handler, made on first use.
pub fn libcamera_root() -> PathBuf {
    require("mmdebstrap", "mmdebstrap");
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("libcamera-trixie");
    if root.join(".complete").exists() {
        return root;
    }
    let partial = root.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    let out = Command::new("mmdebstrap")
        .args([
            "--variant=extract",
            "--include=gstreamer1.0-libcamera/trixie-backports,gstreamer1.0-plugins-base",
            "trixie",
        ])
        .arg(&partial)
        .args([
            "deb http://deb.debian.org/debian trixie main",
            "deb http://deb.debian.org/debian trixie-backports main",
        ])
        .output()
        .expect("mmdebstrap runs");
    assert!(
        out.status.success(),
        "mmdebstrap of the libcamera root failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `extract` unpacks packages without running their scripts: make the merged-/usr links and
    // the mount points by hand.
    for (link, target) in [
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
        ("bin", "usr/bin"),
    ] {
        std::os::unix::fs::symlink(target, partial.join(link)).unwrap();
    }
    for dir in ["proc", "sys", VIRTUAL_CONFIG_DIR] {
        std::fs::create_dir_all(partial.join(dir)).unwrap();
    }
    std::fs::write(partial.join(".complete"), b"").unwrap();
    std::fs::rename(&partial, &root).unwrap();
    root
}

/// Can this process make mount namespaces (root)? Tests that need the root skip without it.
pub fn can_unshare() -> bool {
    Command::new("unshare")
        .args(["--mount", "true"])
        .status()
        .is_ok_and(|s| s.success())
}

/// A virtual camera named `name` sending the image `jpeg` at `width`x`height`; returns the
/// preload library's path and the camera definitions' directory.
pub struct VirtualCamera {
    pub library: PathBuf,
    pub config_dir: PathBuf,
}

pub fn virtual_camera(dir: &Path, name: &str, jpeg: &Path, size: (u32, u32)) -> VirtualCamera {
    let library = build_preload(dir, "libcamera_virtual");
    let config_dir = dir.join("libcamera-virtual");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::copy(jpeg, config_dir.join("frame.jpg")).unwrap();
    let (width, height) = size;
    std::fs::write(
        config_dir.join("virtual.yaml"),
        format!(
            "%YAML 1.1\n---\n\"{name}\":\n  supported_formats:\n  - width: {width}\n    height: {height}\n    frame_rates:\n    - 10\n  frames:\n    path: \"/{VIRTUAL_CONFIG_DIR}/frame.jpg\"\n  location: \"CameraLocationExternal\"\n  model: \"lookout test camera\"\n"
        ),
    )
    .unwrap();
    VirtualCamera {
        library,
        config_dir,
    }
}

impl VirtualCamera {
    /// `lookout` run inside `root` with this camera, `dir` (the test's directory), the model and
    /// the binary visible at their own paths.
    pub fn lookout_command(&self, root: &Path, dir: &Path) -> Command {
        let program = Path::new(env!("CARGO_BIN_EXE_lookout"))
            .canonicalize()
            .unwrap();
        let binds = [
            dir.canonicalize().unwrap(),
            super::model_dir(),
            program.parent().unwrap().to_path_buf(),
        ];
        let r = quote(root);
        let mut script = format!(
            "set -e\nmount --rbind /dev {r}/dev\nmount -t proc proc {r}/proc\nmount --rbind /sys {r}/sys\nmount --bind {} {r}/{VIRTUAL_CONFIG_DIR}\n",
            quote(&self.config_dir)
        );
        for path in &binds {
            let inside = quote(&root.join(path.strip_prefix("/").unwrap()));
            script += &format!("mkdir -p {inside}\nmount --bind {} {inside}\n", quote(path));
        }
        script += &format!("exec chroot {r} \"$@\"\n");
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "sh", "-c", &script, "sh"])
            .arg(&program)
            .env("LD_PRELOAD", &self.library)
            .env("HOME", dir)
            .env("XDG_CACHE_HOME", dir.join("cache"));
        cmd
    }
}

/// A path as one word for sh.
fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}
