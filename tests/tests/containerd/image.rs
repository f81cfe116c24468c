//! The test's image: a busybox-static root filesystem packed as a docker archive
//! (`manifest.json`, the config JSON whose `rootfs.diff_ids` are the layers' sha256, one layer
//! tar), which `ctr image import` takes without a registry.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::clients;

/// `dir/image.tar`: the image `tag` of a busybox root filesystem plus `files` (path, content).
pub fn docker_archive(dir: &Path, tag: &str, files: &[(&str, &str)]) -> PathBuf {
    let root = clients::busybox_rootfs(dir);
    for (path, content) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    let img = dir.join("image");
    std::fs::create_dir_all(&img).unwrap();
    let layer = img.join("layer.tar");
    clients::run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&layer)
            .arg("."),
    );
    let layer_sum = sha256(&layer);
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_sum}")]},
    });
    std::fs::write(img.join("config.json"), config.to_string()).unwrap();
    let config_sum = sha256(&img.join("config.json"));
    std::fs::rename(
        img.join("config.json"),
        img.join(format!("{config_sum}.json")),
    )
    .unwrap();
    std::fs::rename(&layer, img.join(format!("{layer_sum}.tar"))).unwrap();
    let manifest = json!([{
        "Config": format!("{config_sum}.json"),
        "RepoTags": [tag],
        "Layers": [format!("{layer_sum}.tar")],
    }]);
    std::fs::write(img.join("manifest.json"), manifest.to_string()).unwrap();
    let tar = dir.join("image.tar");
    clients::run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&img)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
    );
    tar
}

fn sha256(path: &Path) -> String {
    let out = clients::run_ok(Command::new("sha256sum").arg(path));
    out.split_whitespace().next().unwrap().to_string()
}
