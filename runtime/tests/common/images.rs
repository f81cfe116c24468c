//! Helpers of the image tests (images.rs, images_store.rs): archives written into the test's
//! host, the store's layer and staging directories, the refusal check and the `rmi -f` one.

use super::Env;
use super::archive;

pub fn write(env: &Env, name: &str, data: &[u8]) -> String {
    let p = env.host.dir().join(name);
    std::fs::write(&p, data).unwrap();
    p.display().to_string()
}

/// Imports the two-layer test image as `name` (docker-archive with gzip layers).
pub fn import_test_image(env: &Env, name: &str) -> String {
    let layers = archive::two_layers();
    let cfg = archive::config(&layers, archive::run_config());
    let f = write(
        env,
        "img.tar",
        &archive::docker_archive(&layers, &cfg, None, true),
    );
    env.tether(&["image", "import", "--name", name, &f])
        .ok()
        .trim()
        .to_string()
}

/// `rmi -f` of the image container `c` still uses: the image goes, its two layers stay for
/// the container (prune keeps them) until `c` is removed, and then prune removes them.
#[track_caller]
pub fn forced_rmi_keeps_layers_until_the_container_goes(env: &Env) {
    env.tether(&["rmi", "-f", "bb"]).ok();
    assert_eq!(env.tether(&["image", "prune"]).ok(), "");
    env.tether(&["rm", "c"]).ok();
    assert_eq!(env.tether(&["image", "prune"]).ok().lines().count(), 2);
}

pub fn layer_dirs(env: &Env) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(env.image_root().join("layers"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

pub fn tmp_entries(env: &Env) -> usize {
    std::fs::read_dir(env.image_root().join("tmp")).map_or(0, |rd| rd.count())
}

/// Imports a one-image archive of `layers` (and a valid config for them); it must fail with
/// `needle` and leave no image, no layer, no staging dir, and nothing at `canary`.
#[track_caller]
pub fn refused(env: &Env, layers: &[Vec<u8>], needle: &str) {
    let cfg = archive::config(layers, archive::run_config());
    let f = write(
        env,
        "bad.tar",
        &archive::docker_archive(layers, &cfg, Some("bad"), false),
    );
    env.tether(&["image", "import", &f]).fails_with(needle);
    assert_eq!(
        env.tether(&["images"]).ok().lines().count(),
        1,
        "no image listed"
    );
    assert_eq!(layer_dirs(env), Vec::<String>::new(), "no layer kept");
    assert_eq!(tmp_entries(env), 0, "staging removed");
}
